"""d2v.nets: the published architectures' parameter layouts (Real-ESRGAN's RRDBNet and
SRVGGNetCompact, RIFE's IFNet v4.x), and files in the published layout loaded through
D2V_SR_MODEL / D2V_INTERP_MODEL by the real loading code: the same output as the
network called directly, exact sizes, keyframes kept, clear one-line errors for foreign
or corrupt files, and the `d2v upscale` / `d2v interpolate` commands on an MP4.

No published weights can be fetched here: the files are seeded random weights saved the
way the published ones are (`{'params_ema': ...}`, `module.`-prefixed RIFE keys).
`D2V_REAL_WEIGHTS=DIR` runs the slow test on real files found in DIR."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from d2v.encode import encode_mp4, probe_video
from d2v.errors import ModelNotConfiguredError
from d2v.interpolate import interpolate_frames, load_interp_model, output_count
from d2v.upscale import load_sr_model, method_for, upscale_frames

torch = pytest.importorskip("torch")
esrgan = pytest.importorskip("d2v.nets.esrgan")  # d2v.nets needs torch
rife = pytest.importorskip("d2v.nets.rife")
RRDBNet, SRVGGNetCompact, load_esrgan = esrgan.RRDBNet, esrgan.SRVGGNetCompact, esrgan.load_esrgan
IFNet, RIFEInterpolator, load_rife = rife.IFNet, rife.RIFEInterpolator, rife.load_rife

D2V = str(Path(sys.executable).parent / "d2v")
PHOTO = skimage.data.astronaut()


def conv(cin: int, cout: int, k: int = 3) -> int:
    """Parameters of a k x k conv with bias."""
    return cin * cout * k * k + cout


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def seeded(module, seed: int = 0, gain: float = 1.0):
    """Deterministic random weights (default init from a fixed seed, scaled by gain)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * p.detach().abs().max().clamp_min(1e-3) * gain)
    return module.eval()


def to_tensor(frame: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0


def to_u8(y) -> np.ndarray:
    return (y[0].clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def small(h: int, w: int, y0: int = 180, x0: int = 180) -> np.ndarray:
    import cv2

    return cv2.resize(PHOTO[y0 : y0 + 4 * h, x0 : x0 + 4 * w], (w, h), interpolation=cv2.INTER_AREA)


# -- the published layouts ---------------------------------------------------------------------

def rrdb_params(num_in: int, num_feat: int, num_block: int, gc: int = 32) -> int:
    rdb = sum(conv(num_feat + i * gc, gc) for i in range(4)) + conv(num_feat + 4 * gc, num_feat)
    return conv(num_in, num_feat) + num_block * 3 * rdb + 4 * conv(num_feat, num_feat) + conv(num_feat, 3)


@pytest.mark.parametrize("name, scale, blocks, first_in", [
    ("RealESRGAN_x4plus", 4, 23, 3),
    ("RealESRGAN_x2plus", 2, 23, 12),  # pixel-unshuffled by 2: 3 * 4 channels in
    ("RealESRGAN_x4plus_anime_6B", 4, 6, 3),
])
def test_rrdbnet_has_the_published_layout(name, scale, blocks, first_in):
    net = RRDBNet(3, 3, scale=scale, num_feat=64, num_block=blocks, num_grow_ch=32)
    s = shapes(net)
    assert s["conv_first.weight"] == (64, first_in, 3, 3)
    assert s[f"body.{blocks - 1}.rdb3.conv5.weight"] == (64, 64 + 4 * 32, 3, 3)
    assert s[f"body.{blocks - 1}.rdb1.conv1.weight"] == (32, 64, 3, 3)
    assert f"body.{blocks}.rdb1.conv1.weight" not in s
    for k in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        assert s[f"{k}.weight"] == (64, 64, 3, 3)
    assert s["conv_last.weight"] == (3, 64, 3, 3)
    assert len(s) == 2 + blocks * 3 * 5 * 2 + 4 * 2 + 2
    assert n_params(net) == rrdb_params(first_in, 64, blocks)
    if name == "RealESRGAN_x4plus":
        assert n_params(net) == 16_697_987  # ESRGAN's 16.7M


@pytest.mark.parametrize("name, num_conv", [("realesr-general-x4v3", 32), ("realesr-animevideov3", 16)])
def test_srvgg_has_the_published_layout(name, num_conv):
    net = SRVGGNetCompact(3, 3, num_feat=64, num_conv=num_conv, upscale=4, act_type="prelu")
    s = shapes(net)
    last = 2 * num_conv + 2
    assert s["body.0.weight"] == (64, 3, 3, 3) and s["body.1.weight"] == (64,)  # conv, PReLU
    assert s["body.2.weight"] == (64, 64, 3, 3)
    assert s[f"body.{last}.weight"] == (3 * 16, 64, 3, 3)  # pixel-shuffled to 3 channels at 4x
    assert f"body.{last + 1}.weight" not in s
    assert n_params(net) == conv(3, 64) + 64 + num_conv * (conv(64, 64) + 64) + conv(64, 48)


def ifnet_keys(n_blocks: int) -> set:
    keys = set()
    for b in range(n_blocks):
        keys |= {f"block{b}.conv0.{i}.0.{p}" for i in (0, 1) for p in ("weight", "bias")}
        keys |= {f"block{b}.convblock.{i}.{p}" for i in range(8) for p in ("beta", "conv.weight", "conv.bias")}
        keys |= {f"block{b}.lastconv.0.weight", f"block{b}.lastconv.0.bias"}
    return keys


def test_ifnet_v46_has_the_published_layout():
    net = IFNet()  # v4.6: four blocks on the frames and t, no encoder
    s = shapes(net)
    assert set(s) == ifnet_keys(4)
    assert s["block0.conv0.0.0.weight"] == (96, 7, 3, 3)  # img0, img1, t in
    assert s["block1.conv0.0.0.weight"] == (64, 8 + 4, 3, 3)  # + mask, flow
    assert [s[f"block{i}.conv0.1.0.weight"][0] for i in range(4)] == [192, 128, 96, 64]
    assert s["block0.convblock.7.beta"] == (1, 192, 1, 1)
    assert s["block0.lastconv.0.weight"] == (192, 4 * 6, 4, 4)
    assert s["block3.lastconv.0.weight"] == (64, 4 * 6, 4, 4)
    assert net.modulo == 32


def test_ifnet_v422_and_v425_layouts():
    v422 = shapes(IFNet((256, 192, 96, 48), head=(32, 8), block_out=13))
    assert set(v422) == ifnet_keys(4) | {f"encode.cnn{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert v422["encode.cnn0.weight"] == (32, 3, 3, 3) and v422["encode.cnn3.weight"] == (32, 8, 4, 4)
    assert v422["block0.conv0.0.0.weight"] == (128, 7 + 16, 3, 3)
    assert v422["block1.conv0.0.0.weight"] == (96, 8 + 4 + 16 + 8, 3, 3)
    assert v422["block0.lastconv.0.weight"] == (256, 4 * 13, 4, 4)
    v425 = IFNet((192, 128, 96, 64, 32), head=(16, 4), block_out=13)
    assert shapes(v425)["block4.conv0.0.0.weight"] == (16, 8 + 4 + 8 + 8, 3, 3)
    assert v425.modulo == 64 and v425.scale_list == [16, 8, 4, 2, 1]


# -- Real-ESRGAN files through D2V_SR_MODEL ----------------------------------------------------

SR_NETS = {
    "rrdb_x4": (lambda: RRDBNet(3, 3, scale=4, num_feat=16, num_block=2, num_grow_ch=8), "params_ema"),
    "rrdb_x2": (lambda: RRDBNet(3, 3, scale=2, num_feat=16, num_block=2, num_grow_ch=8), "params_ema"),
    "srvgg_x4": (lambda: SRVGGNetCompact(3, 3, num_feat=16, num_conv=4, upscale=4), "params"),
}


def save_sr(tmp_path: Path, kind: str, seed: int = 1):
    build, wrapper = SR_NETS[kind]
    net = seeded(build(), seed, gain=0.5)
    if isinstance(net, RRDBNet):  # random RRDBNets answer ~0: spread the output over [0, 1]
        with torch.no_grad():
            y = net(to_tensor(small(24, 40)))
            k = 0.15 / float(y.std())
            net.conv_last.weight.mul_(k)
            net.conv_last.bias.mul_(k).add_(0.5 - k * float(y.mean()))
    path = tmp_path / f"{kind}.pth"
    torch.save({wrapper: net.state_dict()}, path)  # as Real-ESRGAN publishes them
    return net, path


@pytest.mark.parametrize("kind", list(SR_NETS))
def test_esrgan_file_upscales_like_the_network(kind, tmp_path, monkeypatch):
    net, path = save_sr(tmp_path, kind)
    scale = net.scale if isinstance(net, RRDBNet) else net.upscale
    monkeypatch.setenv("D2V_SR_MODEL", str(path))
    f = np.stack([small(24, 40), small(24, 40, 100, 220)])
    assert load_sr_model().scale == scale
    assert method_for(40, 24, 40 * scale, 24 * scale) == f"sr: {path.name}"

    out = upscale_frames(f, 40 * scale, 24 * scale)
    with torch.no_grad():
        direct = [to_u8(net(to_tensor(x))) for x in f]
    assert out.shape == (2, 24 * scale, 40 * scale, 3)
    assert all(np.array_equal(o, d) for o, d in zip(out, direct))
    assert len(np.unique(out)) > 50 and out.std() > 10  # varied, not a clamped flat field
    if isinstance(net, SRVGGNetCompact):  # its residual moved the nearest-upsampled input
        assert not np.array_equal(out[0], np.repeat(np.repeat(f[0], scale, 0), scale, 1))

    # odd aspect changes: the cover crop (13 rows for the x2 net: padded, cropped back)
    for w, h in ((101, 33), (37, 59), (2 * 40 * scale + 1, 24 * scale - 1)):
        assert upscale_frames(f, w, h).shape == (2, h, w, 3)


PUBLISHED_SR = {  # name: (network, wrapper key of the published file)
    "RealESRGAN_x4plus": (lambda: RRDBNet(3, 3, scale=4, num_block=23), "params_ema"),
    "RealESRGAN_x2plus": (lambda: RRDBNet(3, 3, scale=2, num_block=23), "params_ema"),
    "RealESRGAN_x4plus_anime_6B": (lambda: RRDBNet(3, 3, scale=4, num_block=6), "params_ema"),
    "realesr-general-x4v3": (lambda: SRVGGNetCompact(3, 3, num_conv=32, upscale=4), "params"),
    "realesr-animevideov3": (lambda: SRVGGNetCompact(3, 3, num_conv=16, upscale=4), "params"),
}


@pytest.mark.parametrize("name", list(PUBLISHED_SR))
def test_spandrel_reads_d2v_networks_as_the_published_ones(name, tmp_path, monkeypatch):
    """Where spandrel imports (it needs a torchvision that loads beside this torch: not on
    the CPU CI box), its own detection must take d2v's files for the published models and
    compute the same output; and D2V_SR_MODEL then loads them through spandrel."""
    try:
        import spandrel
    except Exception as e:  # noqa: BLE001 -- ImportError, or torchvision failing to load
        pytest.skip(f"spandrel does not import here ({type(e).__name__})")
    build, wrapper = PUBLISHED_SR[name]
    net = seeded(build(), 3, gain=0.5)
    path = tmp_path / f"{name}.pth"
    torch.save({wrapper: net.state_dict()}, path)
    desc = spandrel.ModelLoader().load_from_file(str(path))
    assert desc.architecture.name in ("ESRGAN", "RealESRGAN Compact"), desc.architecture.name
    assert desc.scale == (4 if "x2" not in name else 2)
    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs, ours = desc.model.eval()(x), net(x)
    assert theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=1e-5)

    monkeypatch.setenv("D2V_SR_MODEL", str(path))
    model = load_sr_model()
    assert isinstance(model.module, spandrel.ImageModelDescriptor) and model.scale == desc.scale


def test_esrgan_loader_reads_sizes_from_the_weights():
    for build, _ in SR_NETS.values():
        ref = seeded(build())
        net, scale = load_esrgan({"params_ema": ref.state_dict(), "params": {}})
        assert scale == (ref.scale if isinstance(ref, RRDBNet) else ref.upscale)
        x = torch.rand(1, 3, 12, 20)
        with torch.no_grad():
            assert torch.equal(net(x), ref(x))
    # the published sizes, inferred back
    net, scale = load_esrgan({"params_ema": RRDBNet(3, 3, 2, num_block=23).state_dict()})
    assert scale == 2 and len(net.body) == 23 and net.conv_first.in_channels == 12
    net, scale = load_esrgan({"params": SRVGGNetCompact(num_conv=32).state_dict()})
    assert scale == 4 and len(net.body) == 2 * 32 + 3


def test_esrgan_loader_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="not an RRDBNet or SRVGGNetCompact"):
        load_esrgan({"model.0.weight": torch.zeros(64, 3, 3, 3)})  # old-style ESRGAN keys
    sd = RRDBNet(3, 3, 4, num_feat=16, num_block=2, num_grow_ch=8).state_dict()
    sd["conv_hr.weight"] = torch.zeros(16, 8, 3, 3)
    with pytest.raises(ValueError, match="looks like RRDBNet but does not match"):
        load_esrgan(sd)
    sd = RRDBNet(3, 3, 4, num_feat=16, num_block=2, num_grow_ch=8).state_dict()
    sd["conv_first.weight"] = torch.zeros(16, 7, 3, 3)
    with pytest.raises(ValueError, match="not scale 4, 2 or 1"):
        load_esrgan(sd)


# -- RIFE files through D2V_INTERP_MODEL -------------------------------------------------------

def rife_file(tmp_path: Path, net, name: str = "flownet.pkl") -> Path:
    path = tmp_path / name
    sd = {"module." + k: v for k, v in net.state_dict().items()}  # saved from DataParallel
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


def keyframes(h: int = 50, w: int = 70) -> np.ndarray:
    return np.stack([small(h, w, 150 + 6 * k, 170 + 9 * k) for k in range(3)])


def test_rife_v46_file_interpolates_like_the_network(tmp_path, monkeypatch):
    net = seeded(IFNet(), seed=2)
    path = rife_file(tmp_path, net)
    monkeypatch.setenv("D2V_INTERP_MODEL", str(path))
    model = load_interp_model()
    assert "v4.6" in model.kind

    keys = keyframes()  # 50 x 70: padded to 64 x 96 for the network, cropped back
    out = interpolate_frames(keys, 1, 3, method="learned")
    assert out.shape == (output_count(3, 1, 3),) + keys.shape[1:] == (7, 50, 70, 3)
    assert np.array_equal(out[::3], keys)  # keyframes pass through unchanged

    wrapper = RIFEInterpolator(net).eval()
    with torch.no_grad():
        for i, t in ((1, 1 / 3), (2, 2 / 3), (4, 1 / 3), (5, 2 / 3)):
            k = i // 3
            direct = to_u8(wrapper(to_tensor(keys[k]), to_tensor(keys[k + 1]), torch.tensor(t)))
            assert np.array_equal(out[i], direct), i
        blend = (keys[0] * (2 / 3) + keys[1] / 3 + 0.5).astype(np.uint8)
        assert not np.array_equal(out[1], blend) and not np.array_equal(out[1], keys[0])

        # the ends are the frames themselves (the reference pipelines never run the net there)
        a, b = to_tensor(keys[0]), to_tensor(keys[1])
        assert torch.equal(wrapper(a, b, 0.0), a) and torch.equal(wrapper(a, b, torch.ones(1, 1, 1, 1)), b)
        # every output pixel blends two warps of the inputs, so a flat grey pair stays that grey
        grey = torch.full((1, 3, 64, 96), 0.4)
        assert torch.allclose(wrapper(grey, grey, 0.5), grey, atol=1e-5)


def test_rife_v425_safetensors_with_encoder_and_five_blocks(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    net = seeded(IFNet((32, 24, 16, 16, 8), head=(8, 4), block_out=13), seed=3)
    path = rife_file(tmp_path, net, "flownet.safetensors")
    monkeypatch.setenv("D2V_INTERP_MODEL", str(path))
    model = load_interp_model()
    assert "v4.22+" in model.kind and "5 blocks" in model.kind
    keys = keyframes()
    got = model(keys[0], keys[1], 0.5)
    with torch.no_grad():
        direct = to_u8(RIFEInterpolator(net)(to_tensor(keys[0]), to_tensor(keys[1]), 0.5))
    assert got.shape == (50, 70, 3) and np.array_equal(got, direct)


@pytest.mark.parametrize("layout", ["v4.6", "v4.22+"])
def test_ifnet_follows_the_flow_and_mask_it_predicts(layout):
    """Weights set by hand so the first block predicts a 2 px flow to frame 0 and a mask
    logit of 20, and every later block predicts nothing: the output is frame 0 sampled
    2 px to the right (a backward warp, flow in pixels, channels x then y) and, as the
    reference defines the mask, v4.6 keeps the summed logit (frame 0 wins) while the
    encoder versions take the last block's (0: an even blend with frame 1)."""
    net = IFNet() if layout == "v4.6" else IFNet((32, 24, 16, 16), head=(8, 8), block_out=13)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        bias = net.block0.lastconv[0].bias  # pixel-shuffled: output channel c is bias[4c:4c+4]
        bias[0:4] = 2.0 / 8  # block0 works at 1/8 of the frame; its flow is scaled back by 8
        bias[16:20] = 20.0
    model = RIFEInterpolator(net.eval())
    img0, img1 = to_tensor(small(40, 70)), to_tensor(small(40, 70, 100, 220))  # padded to 64 x 96
    with torch.no_grad():
        out = model(img0, img1, 0.5)
    assert out.shape == img0.shape
    shifted = img0[..., 2:]
    if layout == "v4.6":
        assert torch.allclose(out[..., :-2], shifted, atol=1e-4)
        # the last 2 columns sample the padding: zeros, as Practical-RIFE pads
        assert torch.allclose(out[..., -2:], torch.zeros(1, 3, 40, 2), atol=1e-4)
    else:
        assert torch.allclose(out[..., :-2], 0.5 * shifted + 0.5 * img1[..., :-2], atol=1e-4)


def test_rife_loader_strips_the_prefix_and_drops_training_parts():
    net = seeded(IFNet(), seed=4)
    sd = {"module." + k: v for k, v in net.state_dict().items()}
    sd["module.teacher.conv0.0.0.weight"] = torch.zeros(1)  # a training-only block
    model = load_rife(sd)
    x0, x1 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x0, x1, 0.5), RIFEInterpolator(net)(x0, x1, 0.5))
    assert isinstance(load_rife(net.state_dict()).flownet, IFNet)  # without the prefix too
    with pytest.raises(ValueError, match="no IFNet blocks"):
        load_rife({"module.foo.weight": torch.zeros(3)})
    bad = dict(net.state_dict())
    bad["block2.convblock.3.beta"] = torch.ones(1, 5, 1, 1)
    with pytest.raises(ValueError, match="v4.6 layout.*does not match"):
        load_rife(bad)
    old = dict(net.state_dict(), **{"encode.0.weight": torch.zeros(16, 3, 3, 3)})
    with pytest.raises(ValueError, match="before 4.14"):
        load_rife(old)


# -- foreign and corrupt files -----------------------------------------------------------------

def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def test_foreign_and_corrupt_files_are_named_in_one_line(tmp_path, monkeypatch):
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.layer.0.weight": torch.randn(4, 4), "head.bias": torch.randn(4)}, foreign)
    good = rife_file(tmp_path, seeded(IFNet(), seed=5), "good.pkl")
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a cut-off download
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    _, esrgan = save_sr(tmp_path, "srvgg_x4")
    f = keyframes()

    for path, what in ((foreign, "not those of a RIFE"), (esrgan, "not those of a RIFE"),
                       (corrupt, "not a TorchScript"), (junk, "not a TorchScript")):
        monkeypatch.setenv("D2V_INTERP_MODEL", str(path))
        with pytest.raises(ModelNotConfiguredError) as e:
            interpolate_frames(f, 1, 2)
        msg = one_line_error(e)
        assert msg.startswith(f"D2V_INTERP_MODEL={path}") and what in msg, msg

    for path in (foreign, good, corrupt, junk):
        monkeypatch.setenv("D2V_SR_MODEL", str(path))
        with pytest.raises(ModelNotConfiguredError) as e:
            upscale_frames(f, 140, 100)
        msg = one_line_error(e)
        assert msg.startswith(f"D2V_SR_MODEL={path.name}") and "spandrel" in msg, msg
        if path in (foreign, good):
            assert "d2v.nets.esrgan: not an RRDBNet or SRVGGNetCompact" in msg, msg


class Blend(torch.nn.Module):  # an interpolation program: (img0, img1, t) -> frame
    def forward(self, img0, img1, t):
        return img0 * (1 - t) + img1 * t


def test_a_program_of_the_other_stage_is_refused_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "blend.pt2"
    example = (torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48), torch.rand(1, 1, 1, 1))
    torch.export.save(torch.export.export(Blend(), example), str(path))
    monkeypatch.setenv("D2V_SR_MODEL", str(path))
    with pytest.raises(ModelNotConfiguredError) as e:
        upscale_frames(keyframes(), 140, 100)
    assert one_line_error(e).startswith("D2V_SR_MODEL=blend.pt2 does not run as an SR model")


# -- the CLI -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("nets") / "in.mp4"
    encode_mp4(iter([small(64, 96, 140 + 4 * k, 160 + 6 * k) for k in range(6)]), path, 12)
    return path


def run_d2v(env: dict, *args):
    return subprocess.run([D2V, *map(str, args)], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_cli_interpolate_with_a_rife_file(clip_mp4, tmp_path):
    path = rife_file(tmp_path, seeded(IFNet(), seed=6))
    out = tmp_path / "out.mp4"
    r = run_d2v({"D2V_INTERP_MODEL": str(path)}, "interpolate", clip_mp4, "--fps", 24, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "learned" in r.stdout
    info = probe_video(out)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (output_count(6, 12, 24), 24, 96, 64)

    r = run_d2v({"D2V_INTERP_MODEL": str(clip_mp4)}, "interpolate", clip_mp4, "--fps", 24, "-o", out)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "D2V_INTERP_MODEL=" in lines[0], r.stderr


def test_cli_upscale_with_an_esrgan_file(clip_mp4, tmp_path):
    _, path = save_sr(tmp_path, "srvgg_x4")
    out = tmp_path / "out.mp4"
    r = run_d2v({"D2V_SR_MODEL": str(path)}, "upscale", clip_mp4, "--size", "250x170", "-o", out)
    assert r.returncode == 0, r.stderr
    assert f"sr: {path.name}" in r.stdout
    info = probe_video(out)
    assert (info["width"], info["height"], info["frames"]) == (250, 170, 6)


# -- real published files (slow; D2V_REAL_WEIGHTS=DIR) -----------------------------------------

REAL_SR = {"RealESRGAN_x4plus.pth": 4, "RealESRGAN_x2plus.pth": 2, "RealESRGAN_x4plus_anime_6B.pth": 4,
           "realesr-general-x4v3.pth": 4, "realesr-animevideov3.pth": 4}


@pytest.mark.slow
def test_real_published_files(monkeypatch):
    root = os.environ.get("D2V_REAL_WEIGHTS")
    if not root:
        pytest.skip("set D2V_REAL_WEIGHTS to a folder with Real-ESRGAN .pth files and/or a RIFE flownet.pkl")
    found = 0
    f = np.stack([small(32, 48)])
    for name, scale in REAL_SR.items():
        if (Path(root) / name).is_file():
            found += 1
            monkeypatch.setenv("D2V_SR_MODEL", str(Path(root) / name))
            assert load_sr_model().scale == scale
            out = upscale_frames(f, 48 * scale, 32 * scale)
            ref = np.repeat(np.repeat(f[0], scale, 0), scale, 1).astype(float)
            assert np.abs(out[0] - ref).mean() < 20  # a real SR model keeps the picture
    for pkl in sorted(Path(root).rglob("flownet*.pkl")):
        found += 1
        monkeypatch.setenv("D2V_INTERP_MODEL", str(pkl))
        keys = keyframes(64, 96)
        mid = interpolate_frames(keys[:2], 1, 2, method="learned")[1].astype(float)
        assert np.abs(mid - (keys[0] / 2.0 + keys[1] / 2.0)).mean() < 20, pkl
    if not found:
        pytest.skip(f"no known weight files in {root}")
