// The decode step's layers (VisionDecoder._extend_one) as one C++ call that holds no Python lock.
//
// The same ATen operators in the same order as the Python loop, so the results are bit for bit the
// same; what goes is the interpreter between them, about a hundred operator calls a token. Streams
// drawn on several threads of one process (the server's lanes) then wait on Python's lock only
// between tokens. Built on first use by torch.utils.cpp_extension (streamgen/model/native.py).
#include <torch/extension.h>

#include <vector>

using at::Tensor;

struct Stepper {
  // per layer: ln1 weight, ln1 bias, qkv weight^T, qkv bias, proj weight^T, proj bias,
  //            ln2 weight, ln2 bias, fc1 weight^T, fc1 bias, fc2 weight^T, fc2 bias (Workspace.weights_t)
  std::vector<std::vector<Tensor>> weights;
  // per layer: ln_x weight, ln_x bias, xq weight^T, xq bias, xproj weight^T, xproj bias (Workspace.cross_t)
  std::vector<std::vector<Tensor>> cross;
  std::vector<Tensor> layers, keys, values;  // the workspace's per-layer views of its cache
  int64_t heads = 1;

  // x (B, D) at cache position t0; mask: None, (B, 1, 1, t0 + 1) for every layer, or
  // (L, B, H, 1, t0 + 1) one per layer (`per_layer`); text_k/v (L, B, H, T, hd) with text_mask.
  Tensor step(Tensor x, int64_t t0, c10::optional<Tensor> mask, bool per_layer, c10::optional<Tensor> text_k,
              c10::optional<Tensor> text_v, c10::optional<Tensor> text_mask) {
    pybind11::gil_scoped_release no_gil;
    const int64_t B = x.size(0), D = x.size(1), hd = D / heads, t1 = t0 + 1;
    for (size_t l = 0; l < weights.size(); ++l) {
      const std::vector<Tensor>& w = weights[l];
      const bool mixed = layers[l].scalar_type() != x.scalar_type();  // bfloat16 cache: attention in bfloat16
      Tensor qkv = at::addmm(w[3], at::layer_norm(x, {D}, w[0], w[1]), w[2]).view({B, 3, heads, 1, hd});
      layers[l].narrow(3, t0, 1).copy_(qkv.narrow(1, 1, 2).transpose(0, 1));
      Tensor q = qkv.select(1, 0);
      if (mixed) q = q.to(layers[l].scalar_type());
      c10::optional<Tensor> m = mask;
      if (mask.has_value() && per_layer) m = mask->select(0, static_cast<int64_t>(l));
      Tensor a = at::scaled_dot_product_attention(q, keys[l].narrow(2, 0, t1), values[l].narrow(2, 0, t1), m)
                     .view({B, D});
      x = at::addmm(w[5], mixed ? a.to(x.scalar_type()) : a, w[4]).add_(x);
      if (text_k.has_value()) {  // Eq. 10, as Block.cross
        const std::vector<Tensor>& c = cross[l];
        Tensor cq = at::addmm(c[3], at::layer_norm(x, {D}, c[0], c[1]), c[2]).view({B, heads, 1, hd});
        Tensor ca = at::scaled_dot_product_attention(cq, text_k->select(0, static_cast<int64_t>(l)),
                                                     text_v->select(0, static_cast<int64_t>(l)), text_mask);
        x = at::addmm(c[5], ca.view({B, D}), c[4]).add_(x);
      }
      Tensor h = at::gelu(at::addmm(w[9], at::layer_norm(x, {D}, w[6], w[7]), w[8]), "tanh");
      x = at::addmm(w[11], h, w[10]).add_(x);
    }
    return x;
  }
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<Stepper>(m, "Stepper")
      .def(pybind11::init<>())
      .def_readwrite("weights", &Stepper::weights)
      .def_readwrite("cross", &Stepper::cross)
      .def_readwrite("layers", &Stepper::layers)
      .def_readwrite("keys", &Stepper::keys)
      .def_readwrite("values", &Stepper::values)
      .def_readwrite("heads", &Stepper::heads)
      .def("step", &Stepper::step);
}
