// images.js — pixels in the browser: the API's [0,1] rows drawn as PNG blob
// URLs for <img> (the Content-Security-Policy allows blob: images), files
// saved from blobs, and any image file turned into the model's grayscale
// input.

// Rows of h*w values in [0,1] -> a PNG blob (the server's rounding: x*255+0.5).
export function floatsToBlob(row, h, w) {
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const v = row[i] > 0 ? (row[i] >= 1 ? 255 : Math.floor(row[i] * 255 + 0.5)) : 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, 'image/png'));
}

// Show blob in img, releasing the URL it showed before.
export function showBlob(img, blob) {
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
}

export async function showFloats(img, row, h, w) {
  showBlob(img, await floatsToBlob(row, h, w));
}

export function saveBlob(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// Any image file the browser can decode -> {x: h*w floats in [0,1], inverted}.
// Scaled to fit (aspect kept) and centred on black, gray = Rec. 601 luma.
// invert: true/false, or 'auto' to invert pictures whose border is light
// (a photo on white paper), since the data sets draw light on black.
export async function fileToFloats(file, h, w, invert = 'auto') {
  const bmp = await createImageBitmap(file);
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  const s = Math.min(w / bmp.width, h / bmp.height);
  const dw = bmp.width * s;
  const dh = bmp.height * s;
  // fill the margins with the picture's own border colour, so that inverting
  // a light background leaves black margins
  ctx.drawImage(bmp, 0, 0, w, h);
  const edge = ctx.getImageData(0, 0, w, h).data;
  const border = [];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (y === 0 || x === 0 || y === h - 1 || x === w - 1) {
        const i = 4 * (y * w + x);
        border.push((0.299 * edge[i] + 0.587 * edge[i + 1] + 0.114 * edge[i + 2]) / 255);
      }
    }
  }
  const bg = border.reduce((a, b) => a + b, 0) / border.length;
  const g = Math.round(bg * 255);
  ctx.fillStyle = `rgb(${g},${g},${g})`;
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(bmp, (w - dw) / 2, (h - dh) / 2, dw, dh);
  bmp.close();
  const px = ctx.getImageData(0, 0, w, h).data;
  const inv = invert === 'auto' ? bg > 0.5 : invert;
  const x = new Array(h * w);
  for (let i = 0; i < h * w; i++) {
    const a = px[4 * i + 3] / 255; // transparent pixels count as black
    const v = a * (0.299 * px[4 * i] + 0.587 * px[4 * i + 1] + 0.114 * px[4 * i + 2]) / 255;
    x[i] = Math.round((inv ? 1 - v : v) * 1e4) / 1e4;
  }
  return { x, inverted: inv };
}

export async function fileToBase64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
