"""Small models with the parameter names of torchvision's ResNet-18 and Hugging Face's ViT, BERT and GPT-2
(tiny configs, random weights), shared by the ``from_torch`` and ONNX name-recovery tests and by
``tests/fixtures/torch_onnx/make_torch_onnx.py``."""

from __future__ import annotations

import torch
from torch import nn

MODELS = ("resnet", "vit", "bert", "gpt2")


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block (same attribute names)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ``resnet18`` layout (conv1, bn1, layer1.0.conv1, ..., fc) with narrow widths."""

    def __init__(self, widths: tuple[int, ...] = (4, 8, 8, 8), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, w in enumerate(widths):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(name: str, seed: int = 0, dropout: float = 0.0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Model ``name`` (eval mode) with random, non-degenerate weights, and example inputs. Every parameter and
    running statistic is drawn at random: a fresh model's zero biases and unit norms are equal-valued tensors
    that exporters deduplicate or drop, which a trained model's never are."""
    torch.manual_seed(seed)
    if name == "resnet":
        model: nn.Module = ResNet18()
        inputs: tuple[torch.Tensor, ...] = (torch.randn(2, 3, 16, 16),)
    else:
        import transformers as tf

        common = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        if name == "vit":
            model = tf.ViTModel(tf.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=37, **common))
            inputs = (torch.randn(2, 3, 16, 16),)
        elif name == "bert":
            model = tf.BertModel(tf.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=37,
                                               max_position_embeddings=64, **common))
            inputs = (torch.randint(0, 99, (2, 7)),)
        elif name == "gpt2":
            model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                     use_cache=False, resid_pdrop=dropout, embd_pdrop=dropout,
                                                     attn_pdrop=dropout, bos_token_id=0, eos_token_id=0))
            inputs = (torch.randint(0, 99, (2, 7)),)
        else:
            raise ValueError(name)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2).add_(0.05)
        for key, b in model.named_buffers():
            if key.endswith("running_mean"):
                b.normal_(0.0, 0.1)
            elif key.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model.eval(), inputs


def plain_outputs(model: nn.Module) -> None:
    """Make a Hugging Face model return a tuple of tensors (what the ONNX exporters can trace)."""
    if isinstance(model, ResNet18):
        return
    forward = type(model).forward

    def tuple_forward(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if type(model).__name__.startswith("GPT2"):
            # with a mask, transformers skips its packed-sequence detection (torch.diff: no TorchScript export)
            return (forward(model, x, attention_mask=torch.ones_like(x), return_dict=False)[0],)
        return tuple(forward(model, x, return_dict=False)[:2])

    model.forward = tuple_forward


def trained(model: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """Stand-in fine-tuned weights: every float parameter and buffer of ``model`` moved off its exported value
    (in place, so tied parameters stay tied); returns a copy of the new state dict."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=gen))
        for key, tensor in model.named_buffers():
            if key.endswith("running_var"):
                tensor.abs_()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
