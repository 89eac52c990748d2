// Fused StyleGAN2 modulated convolution, CPU.
//
// Same math as codec/ops/modulated_conv.py (rosinality's ModulatedConv2d + StyledConv/ToRGB epilogue),
// computed in a cheaper order:
//   * modulation is moved from the weights to the input:  conv(x, w * s) == conv(x * s, w)  (s over input
//     channels), so the whole batch shares one weight and runs as ONE batched conv (GEMM) instead of a grouped
//     conv with a per-sample weight copy;
//   * demodulation is one [B,I] x [I,O] GEMM:  d[b,o] = rsqrt(sum_i s[b,i]^2 * sum_k w[o,i,k]^2 + eps), and since
//     it is a per-(b,o) scale it commutes with the conv and the blur, so it is applied on the output;
//   * demod scale, noise, bias and leaky-ReLU are one in-place pass over the output (the reference makes 4).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

constexpr double kDemodEps = 1e-8;
constexpr float kSlope = 0.2f;
const float kGain = std::sqrt(2.0f);

// d[b,o] as above, in float32 for accuracy whatever the input dtype.
at::Tensor demod_coefficients(const at::Tensor& weight, const at::Tensor& s) {
  auto w2 = weight.to(at::kFloat).pow(2).sum({2, 3});              // [O, I]
  auto s2 = s.to(at::kFloat).pow(2);                               // [B, I]
  return at::rsqrt(at::matmul(s2, w2.t()) + kDemodEps);            // [B, O]
}

at::Tensor blur_depthwise(const at::Tensor& y, const at::Tensor& blur, int64_t pad0, int64_t pad1) {
  const auto channels = y.size(1);
  auto k = blur.to(y.dtype()).flip({0, 1});
  auto w = k.view({1, 1, k.size(0), k.size(1)}).expand({channels, 1, k.size(0), k.size(1)}).contiguous();
  if (pad0 == pad1) {  // the conv pads itself: no padded copy, and a channels-last input stays channels-last
    return at::conv2d(y, w, {}, at::IntArrayRef{1}, at::IntArrayRef{pad0}, at::IntArrayRef{1}, channels);
  }
  auto padded = at::constant_pad_nd(y, {pad0, pad1, pad0, pad1}, 0);
  return at::conv2d(padded, w, {}, at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, channels);
}

// y = act(y * d[b,c] + noise[p] + bias[c]) in place; y is NCHW- or NHWC- (channels-last) contiguous.
template <typename scalar_t>
void epilogue(at::Tensor& y, const at::Tensor& demod, const at::Tensor& noise, const at::Tensor& bias,
              bool activate) {
  const int64_t batch = y.size(0), channels = y.size(1), plane = y.size(2) * y.size(3);
  const bool nhwc = !y.is_contiguous();
  scalar_t* out = y.data_ptr<scalar_t>();
  const float* d = demod.defined() ? demod.data_ptr<float>() : nullptr;
  const scalar_t* nz = noise.defined() ? noise.data_ptr<scalar_t>() : nullptr;
  const scalar_t* bs = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
  auto apply = [&](scalar_t& value, int64_t b, int64_t c, int64_t p) {
    float v = static_cast<float>(value);
    if (d) v *= d[b * channels + c];
    if (bs) v += static_cast<float>(bs[c]);
    if (nz) v += static_cast<float>(nz[p]);
    if (activate) v = (v >= 0.0f ? v : v * kSlope) * kGain;
    value = static_cast<scalar_t>(v);
  };
  if (nhwc) {  // rows of `channels` values, one per pixel
    at::parallel_for(0, batch * plane, 64, [&](int64_t begin, int64_t end) {
      for (int64_t bp = begin; bp < end; ++bp) {
        scalar_t* row = out + bp * channels;
        for (int64_t c = 0; c < channels; ++c) apply(row[c], bp / plane, c, bp % plane);
      }
    });
  } else {  // planes of `plane` pixels, one per (b, c): the per-(b, c) terms are hoisted so the loop vectorises
    at::parallel_for(0, batch * channels, 16, [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
        scalar_t* row = out + bc * plane;
        const float scale = d ? d[bc] : 1.0f;
        const float shift = bs ? static_cast<float>(bs[bc % channels]) : 0.0f;
        for (int64_t p = 0; p < plane; ++p) {
          float v = static_cast<float>(row[p]) * scale + shift;
          if (nz) v += static_cast<float>(nz[p]);
          if (activate) v = (v >= 0.0f ? v : v * kSlope) * kGain;
          row[p] = static_cast<scalar_t>(v);
        }
      }
    });
  }
}

}  // namespace

// x [B,I,H,W], weight [O,I,k,k], style [B,I]; noise [H',W'] (already times its strength) or undefined;
// bias [O] or undefined; blur [t,t] (needed when upsample).
at::Tensor modulated_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& style, double scale,
                          bool demodulate, bool upsample, const c10::optional<at::Tensor>& blur,
                          const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias,
                          bool activate) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4 && style.dim() == 2, "modulated_conv: bad ranks");
  TORCH_CHECK(x.size(0) == style.size(0) && x.size(1) == weight.size(1) && style.size(1) == x.size(1),
              "modulated_conv: x, weight and style disagree on batch or input channels");
  const int64_t k = weight.size(2);
  auto s = style * scale;                                          // [B, I]
  auto xm = x * s.to(x.dtype()).view({x.size(0), x.size(1), 1, 1});
  at::Tensor y;
  if (upsample) {
    // channels-last lets oneDNN run the transposed conv (the NCHW transposed conv falls back to a slow kernel);
    // plain convs stay NCHW: the layout conversions cost more than they gain there (measured on the tiny model)
    xm = xm.contiguous(at::MemoryFormat::ChannelsLast);
    TORCH_CHECK(blur.has_value(), "modulated_conv: upsample needs the blur kernel");
    y = at::conv_transpose2d(xm, weight.transpose(0, 1), {}, 2, 0);
    const int64_t p = (blur->size(0) - 2) - (k - 1);
    y = blur_depthwise(y, *blur, (p + 1) / 2 + 1, p / 2 + 1);
  } else {
    y = at::conv2d(xm, weight, {}, 1, k / 2);
  }
  if (!y.is_contiguous() && !y.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    y = y.contiguous(at::MemoryFormat::ChannelsLast);
  }
  at::Tensor d = demodulate ? demod_coefficients(weight, s).contiguous() : at::Tensor();
  at::Tensor nz = noise.has_value() ? noise->to(y.dtype()).contiguous().view({-1}) : at::Tensor();
  TORCH_CHECK(!nz.defined() || nz.numel() == y.size(2) * y.size(3), "modulated_conv: noise size mismatch");
  at::Tensor bs = bias.has_value() ? bias->to(y.dtype()).contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "modulated_conv_epilogue",
                                  [&] { epilogue<scalar_t>(y, d, nz, bs, activate); });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("modulated_conv", &modulated_conv, "fused StyleGAN2 modulated conv layer (CPU)");
}
