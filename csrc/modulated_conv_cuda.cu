// Fused StyleGAN2 modulated convolution, CUDA.  Same math as modulated_conv_cpu.cpp:
// modulation moved onto the input (one kernel), one batched cuDNN conv with the shared weight,
// demodulation coefficients from a [B,I]x[I,O] GEMM, one epilogue kernel applying
// demod scale + noise + bias + leaky-ReLU*sqrt(2) in place, and (ToRGB) one kernel adding the skip branch's
// 2x up-sampled RGB (upfirdn2d up=2, polyphase: only the taps that land on non-zero samples).
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

namespace {

constexpr double kDemodEps = 1e-8;
constexpr int kThreads = 256;

// x[b,i,:,:] * s[b,i]: one block-stride loop over all elements.
template <typename scalar_t>
__global__ void modulate_input_kernel(const scalar_t* __restrict__ x, const float* __restrict__ s,
                                      scalar_t* __restrict__ out, int64_t n, int64_t plane) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
       idx += (int64_t)blockDim.x * gridDim.x) {
    out[idx] = static_cast<scalar_t>(static_cast<float>(x[idx]) * s[idx / plane]);
  }
}

template <typename scalar_t>
__global__ void epilogue_kernel(scalar_t* __restrict__ y, const float* __restrict__ demod,
                                const scalar_t* __restrict__ noise, const scalar_t* __restrict__ bias,
                                bool activate, int64_t n, int64_t channels, int64_t plane) {
  const float gain = 1.4142135623730951f;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t bc = idx / plane, p = idx % plane, c = bc % channels;
    float v = static_cast<float>(y[idx]);
    if (demod) v *= demod[bc];
    if (noise) v += static_cast<float>(noise[p]);
    if (bias) v += static_cast<float>(bias[c]);
    if (activate) v = (v >= 0.0f ? v : 0.2f * v) * gain;
    y[idx] = static_cast<scalar_t>(v);
  }
}

// y[p, Y, X] += sum_{a,b} k[a,b] * up[p, Y+a-pad0, X+b-pad0], up = skip zero-inserted 2x (even indices hold
// skip[p, i, j]); k is the flipped FIR kernel [taps, taps] in float32.
template <typename scalar_t>
__global__ void add_upsampled_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ skip,
                                     const float* __restrict__ k, int taps, int64_t pad0, int64_t n, int64_t hy,
                                     int64_t wy, int64_t h, int64_t w) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t x = idx % wy, yy = (idx / wy) % hy, p = idx / (wy * hy);
    const scalar_t* src = skip + p * h * w;
    float v = static_cast<float>(y[idx]);
    for (int a = 0; a < taps; ++a) {
      const int64_t iy = yy + a - pad0;
      if (iy < 0 || iy >= 2 * h || (iy & 1)) continue;
      for (int b = 0; b < taps; ++b) {
        const int64_t ix = x + b - pad0;
        if (ix < 0 || ix >= 2 * w || (ix & 1)) continue;
        v += k[a * taps + b] * static_cast<float>(src[(iy >> 1) * w + (ix >> 1)]);
      }
    }
    y[idx] = static_cast<scalar_t>(v);
  }
}

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

}  // namespace

at::Tensor modulated_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& style, double scale,
                          bool demodulate, bool upsample, const c10::optional<at::Tensor>& blur,
                          const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias,
                          bool activate, const c10::optional<at::Tensor>& skip,
                          const c10::optional<at::Tensor>& skip_kernel) {
  TORCH_CHECK(x.is_cuda() && weight.is_cuda() && style.is_cuda(), "modulated_conv (CUDA): tensors must be on CUDA");
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4 && style.dim() == 2, "modulated_conv: bad ranks");
  TORCH_CHECK(x.size(0) == style.size(0) && x.size(1) == weight.size(1) && style.size(1) == x.size(1),
              "modulated_conv: x, weight and style disagree on batch or input channels");
  const at::cuda::CUDAGuard guard(x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t k = weight.size(2);
  auto xc = x.contiguous();
  auto s = (style.to(at::kFloat) * scale).contiguous();            // [B, I]
  auto xm = at::empty_like(xc);
  const int64_t n_in = xc.numel(), plane_in = xc.size(2) * xc.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(xc.scalar_type(), "modulate_input", [&] {
    modulate_input_kernel<scalar_t><<<blocks_for(n_in), kThreads, 0, stream>>>(
        xc.data_ptr<scalar_t>(), s.data_ptr<float>(), xm.data_ptr<scalar_t>(), n_in, plane_in);
  });
  at::Tensor y;
  if (upsample) {
    TORCH_CHECK(blur.has_value(), "modulated_conv: upsample needs the blur kernel");
    y = at::conv_transpose2d(xm, weight.transpose(0, 1), {}, 2, 0);
    const int64_t p = (blur->size(0) - 2) - (k - 1), channels = y.size(1);
    auto kf = blur->to(y.dtype()).flip({0, 1});
    auto wb = kf.view({1, 1, kf.size(0), kf.size(1)}).expand({channels, 1, kf.size(0), kf.size(1)}).contiguous();
    const int64_t pad0 = (p + 1) / 2 + 1, pad1 = p / 2 + 1;
    y = pad0 == pad1 ? at::conv2d(y, wb, {}, at::IntArrayRef{1}, at::IntArrayRef{pad0}, at::IntArrayRef{1}, channels)
                     : at::conv2d(at::constant_pad_nd(y, {pad0, pad1, pad0, pad1}, 0), wb, {}, at::IntArrayRef{1},
                                  at::IntArrayRef{0}, at::IntArrayRef{1}, channels);
  } else {
    y = at::conv2d(xm, weight, {}, 1, k / 2);
  }
  y = y.contiguous();
  at::Tensor d;
  if (demodulate) {
    auto w2 = weight.to(at::kFloat).pow(2).sum({2, 3});
    d = at::rsqrt(at::matmul(s.pow(2), w2.t()) + kDemodEps).contiguous();
  }
  at::Tensor nz = noise.has_value() ? noise->to(y.dtype()).contiguous() : at::Tensor();
  at::Tensor bs = bias.has_value() ? bias->to(y.dtype()).contiguous() : at::Tensor();
  const int64_t n = y.numel(), plane = y.size(2) * y.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(y.scalar_type(), "modulated_conv_epilogue", [&] {
    epilogue_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        y.data_ptr<scalar_t>(), d.defined() ? d.data_ptr<float>() : nullptr,
        nz.defined() ? nz.data_ptr<scalar_t>() : nullptr, bs.defined() ? bs.data_ptr<scalar_t>() : nullptr,
        activate, n, y.size(1), plane);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (skip.has_value()) {
    TORCH_CHECK(skip_kernel.has_value(), "modulated_conv: skip needs its up-sampling kernel");
    auto sk = skip->to(y.dtype()).contiguous();
    TORCH_CHECK(sk.dim() == 4 && sk.size(0) == y.size(0) && sk.size(1) == y.size(1) && 2 * sk.size(2) == y.size(2) &&
                    2 * sk.size(3) == y.size(3),
                "modulated_conv: skip must be [B, O, H/2, W/2] of the output");
    auto kf = skip_kernel->to(y.device(), at::kFloat).flip({0, 1}).contiguous();
    const int taps = static_cast<int>(kf.size(0));
    const int64_t pad0 = (taps - 2 + 1) / 2 + 1;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(y.scalar_type(), "modulated_conv_skip", [&] {
      add_upsampled_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          y.data_ptr<scalar_t>(), sk.data_ptr<scalar_t>(), kf.data_ptr<float>(), taps, pad0, n, y.size(2),
          y.size(3), sk.size(2), sk.size(3));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("modulated_conv", &modulated_conv, "fused StyleGAN2 modulated conv layer (CUDA)", py::arg("x"),
        py::arg("weight"), py::arg("style"), py::arg("scale"), py::arg("demodulate"), py::arg("upsample"),
        py::arg("blur"), py::arg("noise"), py::arg("bias"), py::arg("activate"), py::arg("skip") = py::none(),
        py::arg("skip_kernel") = py::none());
}
