"""Where the VGG-19 autoencoder checkpoints come from: one :class:`Asset` per file, with real upstream addresses.

``name`` is the file's path under the weights mirror/cache (``wct/...``, ``wct_16x_collab_distill/...``), so the
project's mirror (``$EVALKIT_WEIGHTS_MIRROR``) serves them offline; the URL is what a user with a network downloads.
Digests come from the mirror's SOURCES.md; files whose upstream copy could not be obtained here (WCT levels 4-5,
AdaIN's release) carry ``sha256=None`` and are pinned by the resolver on first download.

Upstream addresses point at the blob itself, at a fixed commit: the Collaborative Distillation ``{k}SE.pth`` names
are git symlinks, and a raw URL of a symlink returns the link text, so the URLs name the link targets.
"""

from __future__ import annotations

from evalkit.assets import Asset

# -- WCT, official (Li et al. 2017): PyTorch conversions of the Torch7 models, as committed in pietrocarbo/deep-transfer
WCT_OFFICIAL_REPO = (
    "https://raw.githubusercontent.com/pietrocarbo/deep-transfer/"
    "e87e72f9f8612062431a82289b758ef570da52c3/models/autoencoder_vgg19"
)
WCT_OFFICIAL_SHA256: dict[str, str | None] = {
    "vgg_normalised_conv1_1.pth": "9f60c0230232985e2505eeaaeb670119eacfd590cb06c2ea752538b974a1d2aa",
    "feature_invertor_conv1_1.pth": "78e72d8d80ea9460c45bc89bf9c29d0804639771e443a18c46e20e1f73a57578",
    "vgg_normalised_conv2_1.pth": "b86e3e26b907a9d97a0567826b18fc85c23b5873acc1c2b7ddb9b0a70fc4a0cb",
    "feature_invertor_conv2_1.pth": "4d4134c572dfa273b4f1f3d76a2439d62197a018de6d743c2b9d85b2093c409e",
    "vgg_normalised_conv3_1.pth": "ff8506173d3a17e7b0fbfbff242c00b6827cfbcd7c21852b46806ae6a3fd7b09",
    "feature_invertor_conv3_1.pth": "f32bc7bd366ff027936b3d90a98bc3f8667ba3f2762df916261a0586c5e30ab5",
    # levels 4-5: not obtainable on the project's machines; pinned on first download
    "vgg_normalised_conv4_1.pth": None,
    "feature_invertor_conv4_1.pth": None,
    "vgg_normalised_conv5_1.pth": None,
    "feature_invertor_conv5_1.pth": None,
}


def wct_official(level: int) -> dict[str, Asset]:
    """Encoder + decoder assets of official WCT level ``level`` (relu{level}_1)."""
    out = {}
    for role, stem in (("encoder", "vgg_normalised"), ("decoder", "feature_invertor")):
        fname = f"{stem}_conv{level}_1.pth"
        out[f"{role}{level}"] = Asset(
            f"wct/{fname}", WCT_OFFICIAL_SHA256[fname], url=f"{WCT_OFFICIAL_REPO}/vgg19_{level}/{fname}"
        )
    return out


# -- Collaborative Distillation 16x (Wang et al. CVPR 2020), MingSun-Tse/Collaborative-Distillation ------------------
CD16X_REPO = (
    "https://raw.githubusercontent.com/MingSun-Tse/Collaborative-Distillation/"
    "4a269dc90020721ef9b279b2926c62f5bcd6d209/trained_models"
)
CD16X_FILES: dict[str, tuple[str, str]] = {  # mirror name -> (path in repo of the symlink target, sha256)
    "1SE.pth": (
        "wct_se_16x_new/20191110-133713_E20.pth",
        "f74755a65164a88e0db8cbb7d99d7078b9fa505df0953fac5123bfc7c84e0ea4",
    ),
    "1SD.pth": (
        "wct_se_16x_new_sd/20191111-091942_E20.pth",
        "05f26ad40044c019da0cf731372d5bd2ee4b477825c7f45508da70b1cd5a95fd",
    ),
    "2SE.pth": (
        "wct_se_16x_new/20191110-132713_E20.pth",
        "cb654af6bae77176f8c7721c965483e865b987f2f1612dda1ba0d0b5c3819a61",
    ),
    "2SD.pth": (
        "wct_se_16x_new_sd/20191111-091932_E20.pth",
        "94dd26f0e69857f79bf284a43a3708aa05c09c2593427c7f6e400ad12ce314e6",
    ),
    "3SE.pth": (
        "wct_se_16x_new/20191110-132705_E20.pth",
        "269cdd0e2634e3e1e5d3005b9e7eca0f4cc8077653fee1ac8c0cf1cbe9ab8758",
    ),
    "3SD.pth": (
        "wct_se_16x_new_sd/20191111-091929_E20.pth",
        "005faba27859435762a8a9386116c00629cd8835a01617d0a71defa577c42174",
    ),
    "4SE.pth": (
        "wct_se_16x_new/20191110-132643_E20.pth",
        "d2f059cbcd6669556a43aadef58d20c8b280462c18b60a9e7424a14dd271cd6b",
    ),
    "4SD.pth": (
        "wct_se_16x_new_sd/20191111-092553_E20.pth",
        "902f65e2c6033d803d02df552eb898e5985190a7ae67d155e384826eec6f04cb",
    ),
    "5SE.pth": (
        "wct_se_16x_new/20191109-211322_E20.pth",
        "9417c34d0d8d621bc6af78be745f1b8d30f5f210efa01e50655c60eb3770816b",
    ),
    "5SD.pth": (
        "wct_se_16x_new_sd/20191110-204615_E20.pth",
        "17fd0f81622f01366eb21cb4d40140ee38cf988ed6eaf266629709c397a8b485",
    ),
}


def cd16x(level: int) -> dict[str, Asset]:
    """Encoder ``{level}SE.pth`` + decoder ``{level}SD.pth`` assets of the 16x Collaborative Distillation students."""
    out = {}
    for role, suffix in (("encoder", "SE"), ("decoder", "SD")):
        fname = f"{level}{suffix}.pth"
        path, digest = CD16X_FILES[fname]
        out[f"{role}{level}"] = Asset(f"wct_16x_collab_distill/{fname}", digest, url=f"{CD16X_REPO}/{path}")
    return out


# -- AdaIN, official (naoto0804/pytorch-AdaIN release v0.0.0) -------------------------------------------------------
ADAIN_RELEASE = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0"
ADAIN_OFFICIAL: dict[str, Asset] = {
    "vgg": Asset("adain/vgg_normalised.pth", None, url=f"{ADAIN_RELEASE}/vgg_normalised.pth"),
    "decoder": Asset("adain/decoder.pth", None, url=f"{ADAIN_RELEASE}/decoder.pth"),
}
