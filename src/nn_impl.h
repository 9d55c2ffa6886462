/* nn_impl.h — test hooks of nn.c, not part of the public API. */
#ifndef LATENTD_NN_IMPL_H
#define LATENTD_NN_IMPL_H

/* sched_yield() calls this thread has made in ld_yield_point (a call
 * counter for tests). */
unsigned long ld_yield_points_taken(void);

#endif
