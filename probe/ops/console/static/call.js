// The call page's audio: decoded in the browser (WebAudio decodeAudioData: WAV and FLAC),
// drawn as a waveform and a spectrogram (a small radix-2 FFT below), on the same time axis as
// the bands the server drew from the probe's analysis.
"use strict";

(function callAudio() {
  const view = document.getElementById("audio-view");
  if (!view) return;
  const RATE = 16000;   // decoded at 16 kHz: telephone audio fits, the FFT stays small
  const FFT = 256;      // 16 ms frames at 16 kHz

  function fail(err) {
    console.error("recording could not be shown", err);
    const box = document.getElementById("audio-error");
    box.textContent = view.dataset.failed + " (" + err + ")";
    box.hidden = false;
    view.dataset.state = "failed";
  }

  async function load() {
    const reply = await fetch(view.dataset.src, {credentials: "same-origin"});
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const bytes = await reply.arrayBuffer();
    const context = new OfflineAudioContext(1, 1, RATE);
    const buffer = await context.decodeAudioData(bytes);
    const samples = buffer.getChannelData(0);
    const duration = Number(view.dataset.duration) || buffer.duration;
    drawWaveform(document.getElementById("waveform"), samples, buffer.sampleRate, duration);
    drawSpectrogram(document.getElementById("spectrogram"), samples, buffer.sampleRate,
                    duration);
    view.dataset.state = "drawn";
    follow(duration);
  }

  function drawWaveform(canvas, samples, rate, duration) {
    const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height, mid = h / 2;
    g.clearRect(0, 0, w, h);
    g.strokeStyle = "#e3e6ea";
    g.beginPath(); g.moveTo(0, mid); g.lineTo(w, mid); g.stroke();
    g.strokeStyle = "#2457c5";
    const perPixel = duration * rate / w;  // the document's time axis, not the buffer's
    for (let x = 0; x < w; x++) {
      const from = Math.floor(x * perPixel), to = Math.min(samples.length,
                                                           Math.floor((x + 1) * perPixel));
      if (from >= samples.length) break;
      let low = 1, high = -1;
      for (let i = from; i < Math.max(to, from + 1); i++) {
        const v = samples[i];
        if (v < low) low = v;
        if (v > high) high = v;
      }
      g.beginPath();
      g.moveTo(x + 0.5, mid - high * mid);
      g.lineTo(x + 0.5, mid - low * mid + 1);
      g.stroke();
    }
  }

  function drawSpectrogram(canvas, samples, rate, duration) {
    const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    const image = g.createImageData(w, h);
    const taper = hann(FFT), re = new Float32Array(FFT), im = new Float32Array(FFT);
    const bins = FFT / 2, perPixel = duration * rate / w;
    for (let x = 0; x < w; x++) {
      const start = Math.floor(x * perPixel + perPixel / 2 - FFT / 2);
      if (start >= samples.length) break;
      for (let i = 0; i < FFT; i++) {
        const j = start + i;
        re[i] = j >= 0 && j < samples.length ? samples[j] * taper[i] : 0;
        im[i] = 0;
      }
      fft(re, im);
      for (let y = 0; y < h; y++) {
        const bin = Math.min(bins - 1, Math.floor((h - 1 - y) / h * bins));
        const power = re[bin] * re[bin] + im[bin] * im[bin];
        const db = 10 * Math.log10(power + 1e-12);          // about -120 .. +30
        const level = Math.max(0, Math.min(1, (db + 90) / 100));
        const [r, gr, b] = colour(level), at = (y * w + x) * 4;
        image.data[at] = r; image.data[at + 1] = gr; image.data[at + 2] = b;
        image.data[at + 3] = 255;
      }
    }
    g.putImageData(image, 0, 0);
    g.fillStyle = "rgba(255,255,255,0.8)";
    g.font = "10px sans-serif";
    g.fillText((rate / 2 / 1000) + " kHz", 4, 11);
    g.fillText("0", 4, h - 3);
  }

  function hann(n) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = 0.5 - 0.5 * Math.cos(2 * Math.PI * i / (n - 1));
    return out;
  }

  // In-place iterative radix-2 FFT (n a power of two).
  function fft(re, im) {
    const n = re.length;
    for (let i = 1, j = 0; i < n; i++) {
      let bit = n >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) {
        [re[i], re[j]] = [re[j], re[i]];
        [im[i], im[j]] = [im[j], im[i]];
      }
    }
    for (let size = 2; size <= n; size <<= 1) {
      const step = -2 * Math.PI / size;
      for (let start = 0; start < n; start += size) {
        for (let k = 0; k < size / 2; k++) {
          const cos = Math.cos(step * k), sin = Math.sin(step * k);
          const a = start + k, b = a + size / 2;
          const tr = re[b] * cos - im[b] * sin, ti = re[b] * sin + im[b] * cos;
          re[b] = re[a] - tr; im[b] = im[a] - ti;
          re[a] += tr; im[a] += ti;
        }
      }
    }
  }

  // Black -> blue -> red -> yellow -> white: loud is bright.
  function colour(t) {
    const stops = [[0, 0, 0], [32, 32, 160], [200, 30, 60], [250, 200, 40], [255, 255, 255]];
    const pos = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(pos));
    const f = pos - i, a = stops[i], b = stops[i + 1];
    return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f));
  }

  // A cursor over the bands follows the player.
  function follow(duration) {
    const player = document.getElementById("player"), cursor = document.getElementById("cursor");
    const bands = document.getElementById("bands");
    if (!player || !cursor || !bands) return;
    const width = Number(bands.getAttribute("width"));
    player.addEventListener("timeupdate", () => {
      const x = Math.min(width, player.currentTime / duration * width);
      cursor.setAttribute("x1", x); cursor.setAttribute("x2", x);
    });
  }

  load().catch(fail);
})();
