#!/usr/bin/env python3
"""Reference trajectories of torch.optim.RMSprop, Adagrad, NAdam and Adamax for
tests/optim/torch_optimizers_test.cpp.

Run with Debian's python3-torch 1.13 (a reference tool, not a dependency of slowmo):

    /usr/bin/python3 tests/optim/reference/torch_reference.py > torch_reference.inc

and paste the output into the test. The problem, in the parameters' dtype, every constant
dyadic so that slowmo computes the very same gradient from the same x:

    x0_i = 1 - i/4,  g_i = a_i (x_i - c_i) + s_ti,  a_i = 1/2 + (i mod 5)/4,
    c_i = (i - 3)/8,  s_ti = ((3t + i) mod 7 - 3)/16,  i = 0..6, t = 0..19 (0-based step).

The default dtype is float64 so that the scalar state torch keeps in tensors (the step
counts, NAdam's mu_product) is double, as in slowmo (with float32 NAdam's product of mu
would be rounded to float every step). NAdam runs with foreach=True: torch 1.13's default
single-tensor path multiplies mu_t twice into prod_{s<=t+1} mu_s (fixed in later
releases); its foreach path computes Dozat's formula, as slowmo does.
"""
import torch

torch.set_default_dtype(torch.float64)

N, STEPS, RECORD = 7, 20, (1, 2, 10, 20)

CONFIGS = [
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.01)),
    ("rmsprop_centered", torch.optim.RMSprop, dict(lr=0.01, centered=True)),
    ("rmsprop_momentum_maximize", torch.optim.RMSprop, dict(lr=0.005, momentum=0.5, maximize=True)),
    ("rmsprop_centered_momentum", torch.optim.RMSprop,
     dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.05, momentum=0.8, centered=True)),
    ("adagrad", torch.optim.Adagrad, dict(lr=0.1)),
    ("adagrad_decay_init_maximize", torch.optim.Adagrad,
     dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-6, maximize=True)),
    ("nadam", torch.optim.NAdam, dict(lr=0.01, foreach=True)),
    ("nadam_options", torch.optim.NAdam,
     dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, momentum_decay=0.01, foreach=True)),
    ("adamax", torch.optim.Adamax, dict(lr=0.01)),
    ("adamax_options_maximize", torch.optim.Adamax,
     dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, maximize=True)),
]


def trajectory(cls, kwargs, dtype):
    i = torch.arange(N, dtype=dtype)
    a = 0.5 + 0.25 * (i % 5)
    c = 0.125 * (i - 3)
    x = (1 - 0.25 * i).requires_grad_(False)
    p = torch.nn.Parameter(x.clone())
    opt = cls([p], **kwargs)
    out = []
    for t in range(STEPS):
        s = 0.0625 * (((3 * t + torch.arange(N)) % 7) - 3).to(dtype)
        with torch.no_grad():
            p.grad = a * (p - c) + s
        opt.step()
        if t + 1 in RECORD:
            out.append([float(v) for v in p.detach()])
    return out


def main():
    print(f"// torch {torch.__version__}: x after steps {RECORD}, [float, double][record][i]")
    for name, cls, kwargs in CONFIGS:
        rows = []
        for dtype, fmt in ((torch.float32, "%.9g"), (torch.float64, "%.17g")):
            recs = ", ".join("{" + ", ".join(fmt % v for v in rec) + "}" for rec in trajectory(cls, kwargs, dtype))
            rows.append("{" + recs + "}")
        print('    {"%s", {%s}},' % (name, ",\n      ".join(rows)))


if __name__ == "__main__":
    main()
