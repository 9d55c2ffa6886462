#!/usr/bin/python3
"""test_web.py — latentd's web page in a real browser (`make test-web`).

Starts a real `latentd serve` (the shipped models, an inference and an admin
token, Fashion-MNIST for the jobs) on a free loopback port, drives Debian's
Chromium through chromium-driver (python3-selenium) and does what a person
would, stage by stage, with a screenshot of each in --screenshots:

  tokens   the page says which token is missing, the tokens are typed in and
           kept across a reload, which then logs no console error at all
  gallery  64 images decoded; another seed gives other pixels, the first seed
           the same ones again
  classify the classifier is listed apart and never chosen to sample from
           (not even when the address names it); Classify labels every
           sample with a Fashion-MNIST class and a probability, and the
           histogram counts them; a new grid drops the labels
  explore  the chosen image's PNG and .npy downloads; a latent slider
           dragged: the image changes
  interp   two gallery images interpolated; play shows moving frames
  upload   a PNG (a Fashion-MNIST test image, coloured and enlarged) gives a
           reconstruction and a bar chart; so does a dropped JPEG; a dropped
           file that is no image gets the server's message in place
  gan upload  a PNG uploaded to the GAN is inverted (G(z), its MSE, z as
           bars), Classify names the input's true class, and, as end
           point A, it is interpolated towards a gallery image
  jobs     a one-epoch job on 2,000 images: progress to 100 %, points on the
           loss chart, the new model in the list, sampled from; a second job
           cancelled
  token    a wrong token: a 401 message
  phone    a 390-px-wide window: nothing wider than the screen

Every stage also requires that the browser logged no error other than the
ones it provokes on purpose (the 401s and the refused upload).
Exit status 0 when every stage passed.
"""
import argparse
import gzip
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "web-test-inference-token-0123456789"
ADMIN = "web-test-admin-token-9876543210"
FASHION = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]
# generous: the machine may be shared and loaded
WAIT = 60


# ------------------------------------------------------------------ helpers

def png_bytes(rgb, w, h):
    """An 8-bit RGB PNG of rows of (r, g, b) tuples."""
    raw = b"".join(b"\0" + bytes(c for px in rgb[y * w:(y + 1) * w] for c in px) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def fashion_png(path, index=0, scale=4):
    """Test image `index` of Fashion-MNIST as a person's photo might be: dark
    blue on white, scale times larger."""
    with gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")) as f:
        f.read(16 + 784 * index)
        px = f.read(784)
    w = h = 28 * scale
    rgb = []
    for y in range(h):
        for x in range(w):
            v = px[(y // scale) * 28 + x // scale] / 255
            rgb.append((int(255 - 215 * v), int(255 - 200 * v), int(255 - 90 * v)))
    with open(path, "wb") as f:
        f.write(png_bytes(rgb, w, h))


def fashion_label(index):
    """The class name of Fashion-MNIST test image `index`."""
    with gzip.open(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")) as f:
        f.read(8 + index)
        return FASHION_CLASSES[f.read(1)[0]]


class Daemon:
    def __init__(self, binary, root):
        self.root = root
        models = os.path.join(root, "models")
        os.makedirs(models)
        os.makedirs(os.path.join(root, "data"))
        for name in ("fashion-vae", "fashion-gan", "fashion-classifier"):
            shutil.copy(os.path.join(ROOT, "models", name + ".safetensors"), models)
        for name, tok in (("token", TOKEN), ("admin", ADMIN)):
            with open(os.path.join(root, name), "w") as f:
                f.write(tok + "\n")
            os.chmod(os.path.join(root, name), 0o600)
        conf = os.path.join(root, "latentd.conf")
        with open(conf, "w") as f:
            f.write("bind = 127.0.0.1\nport = 0\nhttp_threads = 4\n"
                    f"models_dir = {models}\nstate_dir = {root}/state\ndata_dir = {root}/data\n"
                    f"token_file = {root}/token\nadmin_token_file = {root}/admin\n"
                    "access_log = no\nweb = builtin\n")
        self.log = os.path.join(root, "daemon.log")
        self.proc = subprocess.Popen([binary, "serve", "--config", conf],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + WAIT
        self.port = None
        while time.time() < deadline and self.port is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(self.log).read())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
        if self.port is None:
            raise RuntimeError("the daemon did not start:\n" + open(self.log).read())
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


# JavaScript run in the page: a fingerprint of the pixels of some <img>s.
PIXELS_JS = """
const imgs = [...document.querySelectorAll(arguments[0])];
const c = document.createElement('canvas');
const ctx = c.getContext('2d', {willReadFrequently: true});
return imgs.map((img) => {
  if (!img.complete || !img.naturalWidth) return null;
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 4) h = (Math.imul(h, 31) + d[i]) | 0;
  return h;
}).join(',');
"""


# JavaScript run in the page: drop a file on the upload area, as a person
# dragging it there would (arguments[0]: "jpeg" or "text").
DROP_JS = """
const kind = arguments[0];
const done = arguments[arguments.length - 1];
const make = () => new Promise((resolve) => {
  if (kind === 'text') {
    resolve(new File(['this is not an image\\n'], 'notes.png', {type: 'image/png'}));
    return;
  }
  const c = document.createElement('canvas');
  c.width = 300; c.height = 180;
  const ctx = c.getContext('2d');
  ctx.fillStyle = '#111'; ctx.fillRect(0, 0, 300, 180);
  ctx.fillStyle = '#ddd'; ctx.beginPath(); ctx.ellipse(150, 110, 120, 40, 0, 0, 2 * Math.PI); ctx.fill();
  c.toBlob((b) => resolve(new File([b], 'dropped.jpg', {type: 'image/jpeg'})), 'image/jpeg', 0.9);
});
make().then((file) => {
  const dt = new DataTransfer();
  dt.items.add(file);
  const drop = document.querySelector('#drop');
  drop.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
  drop.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
  done(true);
});
"""


class Run:
    def __init__(self, daemon, shots):
        self.d = daemon
        self.shots = shots
        self.n_shot = 0
        self.failures = []
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", "--no-first-run", "--no-default-browser-check",
                  "--disable-extensions", "--disable-background-networking",
                  "--hide-scrollbars", "--force-device-scale-factor=1"):
            opts.add_argument(a)
        self.profile = tempfile.mkdtemp(prefix="latentd-web-chrome-")
        opts.add_argument(f"--user-data-dir={self.profile}")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.downloads = os.path.join(self.profile, "downloads")
        opts.add_experimental_option("prefs", {"download.default_directory": self.downloads,
                                               "download.prompt_for_download": False,
                                               "profile.default_content_setting_values.automatic_downloads": 1})
        self.b = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.b.set_script_timeout(WAIT)

    def close(self):
        self.b.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- small tools
    def q(self, css):
        return self.b.find_element(By.CSS_SELECTOR, css)

    def js(self, script, *args):
        return self.b.execute_script(script, *args)

    def until(self, what, fn, timeout=WAIT):
        try:
            # the page redraws lists as events arrive: an element found a
            # moment ago may be gone, so look again
            return WebDriverWait(self.b, timeout, poll_frequency=0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: fn())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None

    def shot(self, name):
        self.n_shot += 1
        path = os.path.join(self.shots, f"{self.n_shot:02d}-{name}.png")
        self.b.save_screenshot(path)

    def console(self, allowed=()):
        """The browser's errors since the last call, less the allowed patterns."""
        bad = []
        for e in self.b.get_log("browser"):
            if e["level"] != "SEVERE":
                continue
            if any(re.search(p, e["message"]) for p in allowed):
                continue
            bad.append(e["message"])
        return bad

    def text(self, css):
        """textContent (WebDriver's .text is empty for hidden elements)."""
        return self.js("return document.querySelector(arguments[0]).textContent", css)

    def click(self, css):
        """Click css, looking it up again if the page redrew it meanwhile."""
        def attempt():
            self.q(css).click()
            return True
        self.until(f"a click on {css}", attempt)

    def type(self, css, text):
        el = self.q(css)
        el.clear()
        el.send_keys(text)

    def tab(self, name):
        self.q(f'[role=tab][data-tab="{name}"]').click()
        self.until(f"tab {name}", lambda: self.q(f"#tab-{name}").is_displayed())

    def gallery_ready(self, n, seed=None):
        ok = self.js("""
            const imgs = [...document.querySelectorAll('#gallery img')];
            return imgs.length === arguments[0] &&
                   imgs.every((i) => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')) &&
                   !document.querySelector('#gallery').classList.contains('busy');""", n)
        if ok and seed is not None:
            ok = self.text("#g-meta").startswith(f"seed {seed} ")
        return ok

    def pixels(self, css):
        return self.js(PIXELS_JS, css)

    def stage(self, name, fn, allowed=()):
        t0 = time.time()
        try:
            fn()
            bad = self.console(allowed)
            if bad:
                raise AssertionError("console errors: " + " | ".join(bad))
            print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)
        except Exception as e:  # one stage failing still lets the others run
            self.failures.append(name)
            print(f"FAIL {name}: {e}", flush=True)
            try:
                self.shot(f"FAILED-{name}")
                self.console(())
            except Exception:
                pass

    # ------------------------------------------------------------ stages
    def s_tokens(self):
        self.b.get(self.d.url)
        # no token yet: the page says which one it needs
        self.until("the missing-token notice",
                   lambda: "needs the inference token" in self.q("#notice").text)
        # ... and opens the token fields
        self.until("the token fields", lambda: self.q("#tok-inference").is_displayed())
        self.shot("no-token")
        self.type("#tok-inference", TOKEN)
        self.type("#tok-admin", ADMIN)
        self.shot("tokens")
        self.q("#tok-save").click()
        self.until("the notice to clear", lambda: not self.q("#notice").is_displayed())
        # tokens are never in a URL
        assert TOKEN not in self.b.current_url and ADMIN not in self.b.current_url
        self.console([r"/v1/.* 401"])  # the calls made before the tokens were typed
        # a reload keeps them (sessionStorage) and logs no error at all
        self.b.refresh()
        self.until("the model list", lambda: len(self.b.find_elements(By.CSS_SELECTOR, ".model")) >= 2)
        self.until("the gallery after the reload", lambda: self.gallery_ready(64, 1))
        bad = self.console(())
        assert not bad, "console errors after the reload: " + " | ".join(bad)

    def s_gallery(self):
        self.until("64 decoded gallery images", lambda: self.gallery_ready(64, 1))
        names = [e.text for e in self.b.find_elements(By.CSS_SELECTOR, "#model-list .model-name")]
        assert names == ["fashion-gan", "fashion-vae"], names
        assert "fashion-gan" in self.q("#current").text
        assert self.q("#gallery figcaption").text == "1·0"
        first = self.pixels("#gallery img")
        self.shot("gallery-seed-1")
        self.type("#g-seed", "2")
        self.q("#g-same").click()
        self.until("seed 2's images", lambda: self.gallery_ready(64, 2))
        second = self.pixels("#gallery img")
        assert second != first, "seed 2 drew the same pixels as seed 1"
        self.shot("gallery-seed-2")
        self.type("#g-seed", "1")
        self.q("#g-same").click()
        self.until("seed 1's images again", lambda: self.gallery_ready(64, 1))
        assert self.pixels("#gallery img") == first, "seed 1 drew other pixels the second time"
        # "new seed" draws another grid
        self.q("#g-new").click()
        self.until("a new seed", lambda: self.gallery_ready(64) and
                   not self.text("#g-meta").startswith("seed 1 "))
        self.type("#g-seed", "1")
        self.q("#g-same").click()
        self.until("seed 1 again", lambda: self.gallery_ready(64, 1))

    def labels(self, css):
        """[class, probability, text] of each classifier label under css."""
        return self.js("""return [...document.querySelectorAll(arguments[0])].map((c) =>
            [c.dataset.class, +c.dataset.p, c.textContent]);""", css)

    def s_classify(self):
        # the classifier is served but cannot sample: it is listed apart,
        # and an address naming it still opens the first generator
        self.b.get(self.d.url + "#fashion-classifier")
        self.b.refresh()
        self.until("the gallery", lambda: self.gallery_ready(64, 1))
        assert "fashion-gan" in self.q("#current").text, self.q("#current").text
        names = [e.text for e in self.b.find_elements(By.CSS_SELECTOR, "#model-list .model-name")]
        assert names == ["fashion-gan", "fashion-vae"], names
        assert not self.b.find_elements(By.CSS_SELECTOR, '.model[data-name="fashion-classifier"]')
        clfs = [e.get_attribute("data-name") for e in self.b.find_elements(By.CSS_SELECTOR, "#clf-list .clf")]
        assert clfs == ["fashion-classifier"], clfs
        assert not self.q("#g-clf-wrap").is_displayed(), "a classifier picker for one classifier"
        self.q("#g-classify").click()
        self.until("a label under every sample", lambda: len(self.labels("#gallery .cls[data-class]")) == 64)
        labels = self.labels("#gallery .tile .cls")
        assert len(labels) == 64, len(labels)
        for c, p, text in labels:
            assert c in FASHION_CLASSES and 0 < p <= 1 and text.startswith(c + " "), (c, p, text)
        hist = self.js("""return [...document.querySelectorAll('#g-hist li')].map((li) =>
            [li.dataset.class, +li.dataset.count]);""")
        assert [c for c, _ in hist] == FASHION_CLASSES, hist
        assert sum(n for _, n in hist) == 64, hist
        for c, n in hist:  # the histogram counts the labels shown
            assert n == sum(1 for x in labels if x[0] == c), (c, n)
        assert self.q("#g-hist").is_displayed()
        self.shot("classified")
        # another grid drops the labels made for the last one
        self.type("#g-seed", "2")
        self.q("#g-same").click()
        self.until("seed 2's images", lambda: self.gallery_ready(64, 2))
        assert not self.labels("#gallery .cls[data-class]") and not self.q("#g-hist").is_displayed()
        self.type("#g-seed", "1")
        self.q("#g-same").click()
        self.until("seed 1 again", lambda: self.gallery_ready(64, 1))

    def s_explore(self):
        self.q('#gallery figure[data-row="3"] img').click()
        self.until("the chosen image", lambda: self.q("#g-picked").is_displayed())
        self.shot("gallery-picked")
        # its downloads are the server's PNG and .npy of that one image
        self.q("#g-png").click()
        self.q("#g-npy").click()
        png = os.path.join(self.downloads, "fashion-gan-seed1-row3.png")
        npy = os.path.join(self.downloads, "fashion-gan-seed1-row3.npy")
        self.until("the downloads", lambda: os.path.exists(png) and os.path.exists(npy))
        with open(png, "rb") as f:
            head = f.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (28, 28), head
        with open(npy, "rb") as f:
            data = f.read()
        assert data[:6] == b"\x93NUMPY" and b"(1, 28, 28)" in data[:128], data[:128]
        assert len(data) - data.index(b"\n") - 1 == 784 * 4, len(data)
        self.q("#g-explore").click()
        self.until("the explorer", lambda: self.q("#x-body").is_displayed())
        sliders = self.b.find_elements(By.CSS_SELECTOR, "#x-sliders input[type=range]")
        assert len(sliders) >= 8, f"{len(sliders)} sliders"
        self.until("the decoded latent", lambda: self.pixels("#x-img") not in ("", None, "null"))
        before = self.pixels("#x-img")
        # drag the first slider most of the way to its right end, as a hand would
        s = sliders[0]
        ActionChains(self.b).click_and_hold(s).move_by_offset(s.size["width"] // 2 - 4, 0).pause(0.2) \
            .move_by_offset(-20, 0).pause(0.2).move_by_offset(15, 0).release().perform()
        self.until("the image to change", lambda: self.pixels("#x-img") not in (before, "null"))
        assert re.search(r"\d+ decodes", self.q("#x-meta").text)
        self.shot("explorer")

    def s_interp(self):
        self.tab("gallery")
        self.q('#gallery figure[data-row="0"] img').click()
        self.q("#g-as-a").click()
        self.q('#gallery figure[data-row="7"] img').click()
        self.q("#g-as-b").click()
        self.tab("interp")
        self.type("#i-steps", "16")
        self.q("#i-run").click()
        self.until("16 frames", lambda: self.js(
            "return [...document.querySelectorAll('#i-strip img')].filter((i) => i.naturalWidth > 0).length") == 16)
        self.q("#i-play").click()
        seen = set()
        t_end = time.time() + 3
        while time.time() < t_end and len(seen) < 5:
            seen.add(self.q("#i-frame").get_attribute("src"))
            time.sleep(0.05)
        assert len(seen) >= 5, f"playing showed {len(seen)} frames in 3 s"
        self.shot("interpolation-playing")
        self.q("#i-play").click()
        assert self.q("#i-play").text == "Play"

    def upload_png(self, model, tmp, name, index, what):
        """Choose model, upload Fashion-MNIST test image index as name and
        wait for its card's two images (input and the model's answer)."""
        self.q(f'.model[data-name="{model}"]').click()
        self.until(f"{model}'s gallery", lambda: model in self.q("#current").text and
                   self.gallery_ready(64))
        self.tab("upload")
        png = os.path.join(tmp, name)
        fashion_png(png, index=index)
        self.q("#u-file").send_keys(png)
        self.until(what, lambda: self.js(f"""
            const c = document.querySelector('.upload:first-child');
            const imgs = c.querySelectorAll('img');
            return c.textContent.includes('{name}') && imgs.length === 2 &&
                   [...imgs].every((i) => i.naturalWidth > 0);"""))
        return ".upload:first-child"

    def s_upload(self, tmp):
        card = self.upload_png("fashion-vae", tmp, "shirt-photo.png", 1, "the reconstruction")
        assert self.js(f"return !!Chart.getChart(document.querySelector('{card} canvas'))"), "no bar chart"
        assert self.js(f"return Chart.getChart(document.querySelector('{card} canvas')).data.datasets[0].data.length") == 20
        assert "inverted" in self.q(f"{card} figcaption").text
        # Classify labels the input and the reconstruction (read back from its PNG)
        self.q(f"{card} button.classify").click()
        self.until("the input's and the reconstruction's labels",
                   lambda: len(self.labels(f"{card} .cls[data-class]")) == 2)
        for c, p, _ in self.labels(f"{card} .cls"):
            assert c in FASHION_CLASSES and 0 < p <= 1, (c, p)
        # dropped, as from a file manager: a JPEG (a light sandal-like
        # shape on dark, not square), then a file that is no image at all
        self.b.execute_async_script(DROP_JS, "jpeg")
        self.until("the dropped JPEG's reconstruction", lambda: self.js(f"""
            const c = document.querySelector('{card}');
            return c.textContent.includes('dropped.jpg') &&
                   [...c.querySelectorAll('img')].filter((i) => i.naturalWidth > 0).length === 2;"""))
        self.b.execute_async_script(DROP_JS, "text")
        self.until("the server's message in place",
                   lambda: "not a usable" in self.q(f"{card} .error").text)
        self.shot("upload")

    def s_gan_upload(self, tmp):
        # a GAN inverts the upload (z and G(z) on the card); used as end
        # point A, it is inverted again by /interpolate and the path starts
        # at it
        card = self.upload_png("fashion-gan", tmp, "gan-photo.png", 2, "the inversion")
        assert "MSE" in self.q(f"{card} figure:nth-child(2) figcaption").text
        assert self.js(f"return Chart.getChart(document.querySelector('{card} canvas')).data.datasets[0].data.length") == 100
        # the classifier names the uploaded test image's true class
        self.q(f"{card} button.classify").click()
        self.until("the input's and the inversion's labels",
                   lambda: len(self.labels(f"{card} .cls[data-class]")) == 2)
        (c_in, p_in, _), (c_out, p_out, _) = self.labels(f"{card} .cls")
        assert c_in == fashion_label(2), (c_in, fashion_label(2))
        assert 0 < p_in <= 1 and c_out in FASHION_CLASSES and 0 < p_out <= 1, (p_in, c_out, p_out)
        self.shot("gan-upload-classified")
        self.q(f"{card} button").click()  # Use as A
        self.tab("gallery")
        self.q('#gallery figure[data-row="7"] img').click()
        self.q("#g-as-b").click()
        self.tab("interp")
        assert "(inverted)" in self.q("#i-a figcaption").text
        self.type("#i-steps", "8")
        self.q("#i-run").click()
        self.until("8 frames from the inverted image", lambda: self.js(
            "return [...document.querySelectorAll('#i-strip img')].filter((i) => i.naturalWidth > 0).length") == 8)
        self.shot("interpolation-from-inverted-upload")

    def s_jobs(self):
        self.tab("jobs")
        self.until("the jobs list", lambda: "No jobs yet" in self.q("#job-list").text)
        self.type("#j-model", "web-test-vae")
        self.type("#j-limit", "2000")
        self.type("#j-epochs", "1")
        self.q("#j-submit").click()
        job = '#job-list .job[data-state]'
        self.until("the job to start", lambda: self.b.find_elements(By.CSS_SELECTOR, job))
        self.until("the job to succeed", lambda: self.q(job).get_attribute("data-state") == "succeeded",
                   timeout=3 * WAIT)
        pct = self.text(f"{job} .pct")
        assert pct == "100%", pct
        points = self.js("return Chart.getChart(document.querySelector('#loss-chart')).data.datasets"
                         ".map((d) => d.data.length)")
        assert points and min(points) > 0, f"loss chart points: {points}"
        self.shot("job-succeeded")
        # the new model is listed without a reload, and samples
        self.until("the new model in the list",
                   lambda: self.b.find_elements(By.CSS_SELECTOR, '.model[data-name="web-test-vae"]'))
        self.click('.model[data-name="web-test-vae"]')
        self.until("the new model chosen", lambda: "web-test-vae" in self.q("#current").text)
        self.tab("gallery")
        self.until("the new model's samples", lambda: self.gallery_ready(64))
        assert "examples" in self.q("#model-detail").text
        self.shot("new-model")
        # a second job, long enough to be cancelled while it runs
        self.tab("jobs")
        self.type("#j-model", "web-test-cancelled")
        self.type("#j-limit", "60000")
        self.type("#j-epochs", "50")
        self.q("#j-submit").click()
        second = '#job-list .job[data-state]:first-child'
        self.until("the second job to run",
                   lambda: self.q(second).get_attribute("data-state") == "running" and
                   "web-test-cancelled" in self.text(second))
        self.until("some progress", lambda: self.text(f"{second} .pct") != "0%")
        self.shot("job-running")
        self.click(f"{second} button.cancel")
        self.until("the job cancelled", lambda: self.q(second).get_attribute("data-state") == "cancelled")
        self.shot("job-cancelled")

    def s_wrong_token(self):
        self.q("#tokens-btn").click()
        self.type("#tok-inference", "not-the-right-token-at-all")
        self.q("#tok-save").click()
        self.until("a 401 message", lambda: self.q("#notice").is_displayed() and
                   "401" in self.q("#notice").text and "inference token" in self.q("#notice").text)
        self.shot("wrong-token")
        self.q("#tokens-btn").click()
        self.type("#tok-inference", TOKEN)
        self.q("#tok-save").click()
        self.until("the notice to clear", lambda: not self.q("#notice").is_displayed())

    def s_phone(self):
        self.b.set_window_size(390, 844)
        self.b.refresh()
        self.until("the gallery", lambda: self.gallery_ready(64))
        # the reload kept the chosen model (its name is in the address)
        assert "web-test-vae" in self.q("#current").text, self.q("#current").text
        over = self.js("return document.documentElement.scrollWidth - window.innerWidth")
        assert over <= 0, f"the page is {over} px wider than the window"
        self.shot("phone-gallery")
        self.tab("jobs")
        self.until("the job list", lambda: len(self.b.find_elements(By.CSS_SELECTOR, ".job")) >= 2)
        over = self.js("return document.documentElement.scrollWidth - window.innerWidth")
        assert over <= 0, f"the jobs tab is {over} px wider than the window"
        self.shot("phone-jobs")
        self.b.set_window_size(1400, 1000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/latentd"))
    ap.add_argument("--screenshots", default=os.path.join(ROOT, "build/screenshots"))
    args = ap.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    for f in os.listdir(args.screenshots):
        if f.endswith(".png"):
            os.remove(os.path.join(args.screenshots, f))
    tmp = tempfile.mkdtemp(prefix="latentd-web-")
    d = Daemon(os.path.abspath(args.bin), tmp)
    r = None
    try:
        r = Run(d, args.screenshots)
        r.stage("tokens", r.s_tokens, allowed=[r"/v1/.* 401"])
        r.stage("gallery", r.s_gallery)
        r.stage("classify", r.s_classify)
        r.stage("explore", r.s_explore)
        r.stage("interpolation", r.s_interp)
        r.stage("upload", lambda: r.s_upload(tmp), allowed=[r"/reconstruct .*422", r"/encode .*422"])
        r.stage("gan upload", lambda: r.s_gan_upload(tmp))
        r.stage("jobs", r.s_jobs)
        r.stage("wrong token", r.s_wrong_token, allowed=[r"/v1/.* 401"])
        r.stage("phone width", r.s_phone)
    finally:
        if r:
            r.close()
        status = d.stop()
        log = open(d.log).read()
        shutil.rmtree(tmp, ignore_errors=True)
    failed = r.failures if r else ["browser start"]
    if status != 0:
        failed.append(f"daemon exit status {status}")
    if failed:
        print("web test FAILED: " + ", ".join(failed) + "\n--- daemon log (tail) ---\n" + log[-3000:])
        return 1
    print(f"web test passed; screenshots in {args.screenshots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
