// Fused StyleGAN2 modulated convolution, CPU.
//
// Same math as codec/ops/modulated_conv.py (rosinality's ModulatedConv2d + StyledConv/ToRGB epilogue, and the
// ToRGB skip branch's 2x up-sampling), computed in a cheaper order:
//   * modulation is moved from the weights to the input:  conv(x, w * s) == conv(x * s, w)  (s over input
//     channels), so the whole batch shares one weight and runs as ONE batched conv (GEMM) instead of a grouped
//     conv with a per-sample weight copy;
//   * demodulation is one [B,I] x [I,O] GEMM:  d[b,o] = rsqrt(sum_i s[b,i]^2 * sum_k w[o,i,k]^2 + eps), and since
//     it is a per-(b,o) scale it commutes with the conv and the blur, so it is applied on the output;
//   * what does not depend on the styles (sum_k w^2, the transposed conv's weight layout) is computed once per
//     weight and cached (keyed on the weight's storage and version counter: an in-place change recomputes);
//   * the up-sampling layer's 4x4 blur runs as two 1-D passes fused with the epilogue: demod scale, noise, bias
//     and leaky-ReLU are applied in the same pass, which reads the transposed conv's channels-last output and
//     writes the NCHW result (no depthwise conv, no layout conversion, one pass over the big output);
//   * 1x1 layers (ToRGB) modulate their tiny weight per sample instead of the input (one GEMM per sample), and
//     add the skip branch's 2x up-sampled RGB (upfirdn2d up=2, polyphase: only the non-zero taps) in place.
// Every sample is computed by the same operations whatever the batch, so a frame's output does not depend on
// the batch it is decoded in. The hand-written loops below use at::parallel_for but this file is built without
// OpenMP, so they run on the calling thread (light, memory-bound passes; the convs and GEMMs use torch's threads).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/core/StorageImpl.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

namespace {

constexpr double kDemodEps = 1e-8;
constexpr float kSlope = 0.2f;
const float kGain = std::sqrt(2.0f);

// ---- style-independent tensors derived from a weight, cached per weight ------------------------------------

struct Derived {
  at::Tensor w2;          // [O, I] float32: sum over the kernel taps of weight^2
  at::Tensor transposed;  // [I, O, k, k] channels-last, the transposed conv's weight (upsample layers only)
};

struct CacheEntry {
  // a weak reference keeps the StorageImpl object (not its data) alive, so its address cannot be reused by
  // another weight while the entry exists; an expired entry is dropped
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const c10::StorageImpl* key;
  int64_t version, offset;
  std::vector<int64_t> sizes, strides;
  at::ScalarType dtype;
  Derived derived;
};

std::mutex g_cache_mutex;
std::vector<CacheEntry> g_cache;
constexpr size_t kCacheCapacity = 256;

void fill_derived(Derived& d, const at::Tensor& weight, bool need_transposed) {
  at::NoGradGuard no_grad;
  if (!d.w2.defined()) d.w2 = weight.to(at::kFloat).pow(2).sum({2, 3}).contiguous();
  if (need_transposed && !d.transposed.defined()) {
    d.transposed = weight.transpose(0, 1).contiguous(at::MemoryFormat::ChannelsLast);
  }
}

Derived derived_for(const at::Tensor& weight, bool need_transposed) {
  Derived fresh;
  if (weight.is_inference() || !weight.has_storage()) {  // no version counter: cannot tell a change, no cache
    fill_derived(fresh, weight, need_transposed);
    return fresh;
  }
  const c10::StorageImpl* key = weight.storage().unsafeGetStorageImpl();
  const int64_t version = weight._version();
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  for (auto it = g_cache.begin(); it != g_cache.end();) {
    if (it->storage.expired()) {
      it = g_cache.erase(it);
      continue;
    }
    if (it->key == key && it->offset == weight.storage_offset() && it->dtype == weight.scalar_type() &&
        it->sizes == weight.sizes().vec() && it->strides == weight.strides().vec()) {
      if (it->version != version) {
        it->derived = Derived();
        it->version = version;
      }
      fill_derived(it->derived, weight, need_transposed);
      return it->derived;
    }
    ++it;
  }
  fill_derived(fresh, weight, need_transposed);
  if (g_cache.size() >= kCacheCapacity) g_cache.erase(g_cache.begin());
  g_cache.push_back(CacheEntry{weight.storage().getWeakStorageImpl(), key, version, weight.storage_offset(),
                               weight.sizes().vec(), weight.strides().vec(), weight.scalar_type(), fresh});
  return fresh;
}

// d[b,o] as above, in float32 for accuracy whatever the input dtype.
at::Tensor demod_coefficients(const at::Tensor& w2, const at::Tensor& s) {
  auto s2 = s.to(at::kFloat).pow(2);                               // [B, I]
  return at::rsqrt(at::matmul(s2, w2.t()) + kDemodEps).contiguous();  // [B, O]
}

// ---- FIR kernels ---------------------------------------------------------------------------------------------

// The flipped (convolution) kernel as floats, and its two 1-D factors when it is separable (kv[a] * kh[b]).
struct Fir {
  int64_t taps = 0;
  std::vector<float> k2;      // [taps * taps], flipped
  std::vector<float> kv, kh;  // empty if not separable
};

Fir make_fir(const at::Tensor& kernel) {
  TORCH_CHECK(kernel.dim() == 2 && kernel.size(0) == kernel.size(1), "modulated_conv: FIR kernel must be [t, t]");
  Fir f;
  f.taps = kernel.size(0);
  auto k = kernel.detach().to(at::kCPU, at::kFloat).flip({0, 1}).contiguous();
  const float* p = k.data_ptr<float>();
  f.k2.assign(p, p + f.taps * f.taps);
  std::vector<double> rows(f.taps, 0.0), cols(f.taps, 0.0);
  double total = 0.0, peak = 0.0;
  for (int64_t a = 0; a < f.taps; ++a) {
    for (int64_t b = 0; b < f.taps; ++b) {
      const double v = f.k2[a * f.taps + b];
      rows[a] += v;
      cols[b] += v;
      total += v;
      peak = std::max(peak, std::abs(v));
    }
  }
  if (total == 0.0) return f;
  std::vector<float> kv(f.taps), kh(f.taps);
  for (int64_t a = 0; a < f.taps; ++a) kv[a] = static_cast<float>(rows[a]);
  for (int64_t b = 0; b < f.taps; ++b) kh[b] = static_cast<float>(cols[b] / total);
  for (int64_t a = 0; a < f.taps; ++a) {
    for (int64_t b = 0; b < f.taps; ++b) {
      if (std::abs(static_cast<double>(kv[a]) * kh[b] - f.k2[a * f.taps + b]) > 1e-6 * peak) return f;
    }
  }
  f.kv = std::move(kv);
  f.kh = std::move(kh);
  return f;
}

inline int64_t floor_div2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

// leaky ReLU * sqrt(2), the same values as (v >= 0 ? v : v * slope) * gain; built with -fno-trapping-math
// (codec/ops/extension.py) so it compiles to branch-free vector code (a mispredicted branch per value made the
// epilogue cost as much as the conv on the tiny model's layers)
inline float lrelu(float v) { return (std::max(v, 0.0f) + std::min(v, 0.0f) * kSlope) * kGain; }
inline float act(float v, bool activate) { return activate ? lrelu(v) : v; }

// ---- epilogues -------------------------------------------------------------------------------------------------

// y = act(y * d[b,c] + bias[c] + noise[p]) in place; y is NCHW-contiguous.
template <typename scalar_t>
void epilogue(at::Tensor& y, const float* d, const scalar_t* nz, const scalar_t* bs, bool activate) {
  const int64_t batch = y.size(0), channels = y.size(1), plane = y.size(2) * y.size(3);
  scalar_t* out = y.data_ptr<scalar_t>();
  at::parallel_for(0, batch * channels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {  // the per-(b, c) terms are hoisted so the loop vectorises
      scalar_t* row = out + bc * plane;
      const float scale = d ? d[bc] : 1.0f;
      const float shift = bs ? static_cast<float>(bs[bc % channels]) : 0.0f;
      for (int64_t p = 0; p < plane; ++p) {
        float v = static_cast<float>(row[p]) * scale + shift;
        if (nz) v += static_cast<float>(nz[p]);
        row[p] = static_cast<scalar_t>(act(v, activate));
      }
    }
  });
}

// y[b,o] = act(blur(t)[b,o] * d[b,o] + bias[o] + noise) with a separable FIR (zero padding pad0 before, the
// output size decides the rest). t is [B,O,Ht,Wt] channels-last; y is a fresh NCHW [B,O,Hy,Wy].
template <typename scalar_t>
void blur_epilogue(const at::Tensor& t, at::Tensor& y, const Fir& fir, int64_t pad0, const float* d,
                   const scalar_t* nz, const scalar_t* bs, bool activate) {
  const int64_t batch = t.size(0), channels = t.size(1), ht = t.size(2), wt = t.size(3);
  const int64_t hy = y.size(2), wy = y.size(3), taps = fir.taps;
  const int64_t wp = wy + taps - 1;  // a padded row: enough for every output column's taps
  const scalar_t* in = t.data_ptr<scalar_t>();
  scalar_t* out = y.data_ptr<scalar_t>();
  const float* kv = fir.kv.data();
  const float* kh = fir.kh.data();
  // channels-last: one (b, output row) at a time; the taps run over rows of `channels` contiguous values
  at::parallel_for(0, batch * hy, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(wp * channels), res(wy * channels);
    for (int64_t by = begin; by < end; ++by) {
      const int64_t b = by / hy, yy = by % hy;
      std::fill(row.begin(), row.end(), 0.0f);
      for (int64_t a = 0; a < taps; ++a) {
        const int64_t iy = yy + a - pad0;
        if (iy < 0 || iy >= ht) continue;
        const scalar_t* src = in + (b * ht + iy) * wt * channels;
        const float ka = kv[a];
        const int64_t n = std::min<int64_t>(wt, wp - pad0) * channels;
        float* r = row.data() + pad0 * channels;
        for (int64_t i = 0; i < n; ++i) r[i] += ka * static_cast<float>(src[i]);
      }
      for (int64_t x = 0; x < wy; ++x) {
        float* o = res.data() + x * channels;
        std::fill(o, o + channels, 0.0f);
        for (int64_t bb = 0; bb < taps; ++bb) {
          const float kb = kh[bb];
          const float* r = row.data() + (x + bb) * channels;
          for (int64_t c = 0; c < channels; ++c) o[c] += kb * r[c];
        }
      }
      const scalar_t* nrow = nz ? nz + yy * wy : nullptr;
      for (int64_t c = 0; c < channels; ++c) {
        scalar_t* drow = out + ((b * channels + c) * hy + yy) * wy;
        const float scale = d ? d[b * channels + c] : 1.0f;
        const float shift = bs ? static_cast<float>(bs[c]) : 0.0f;
        for (int64_t x = 0; x < wy; ++x) {
          float v = res[x * channels + c] * scale + shift;
          if (nrow) v += static_cast<float>(nrow[x]);
          drow[x] = static_cast<scalar_t>(act(v, activate));
        }
      }
    }
  });
}

// y += upfirdn2d(skip, up=2, pad=(pad0, pad1)) in place: zero insertion then the FIR, computed polyphase (only
// the taps that land on a non-zero sample). skip [B,C,h,w] NCHW, y [B,C,2h,2w] NCHW.
template <typename scalar_t>
void add_upsampled(at::Tensor& y, const at::Tensor& skip, const Fir& fir, int64_t pad0) {
  const int64_t planes = y.size(0) * y.size(1), hy = y.size(2), wy = y.size(3);
  const int64_t h = skip.size(2), w = skip.size(3), taps = fir.taps;
  const scalar_t* in = skip.data_ptr<scalar_t>();
  scalar_t* out = y.data_ptr<scalar_t>();
  // output column x = 2m + px takes, for each tap b with (px + b - pad0) even, the sample m + (px + b - pad0)/2;
  // the source row is copied into a zero-padded buffer so no tap needs a bounds check
  const int64_t margin = taps + 1;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> src(w + 2 * margin, 0.0f), acc(wy + 1);
    for (int64_t pc = begin; pc < end; ++pc) {
      const scalar_t* plane = in + pc * h * w;
      scalar_t* dst = out + pc * hy * wy;
      for (int64_t yy = 0; yy < hy; ++yy) {
        scalar_t* drow = dst + yy * wy;
        for (int64_t x = 0; x < wy; ++x) acc[x] = static_cast<float>(drow[x]);
        for (int64_t a = 0; a < taps; ++a) {
          const int64_t iy = yy + a - pad0;  // index on the zero-inserted grid: even ones hold samples
          if (iy < 0 || iy >= 2 * h || (iy & 1)) continue;
          const scalar_t* srow = plane + (iy >> 1) * w;
          for (int64_t j = 0; j < w; ++j) src[margin + j] = static_cast<float>(srow[j]);
          for (int64_t px = 0; px < 2; ++px) {
            for (int64_t b = 0; b < taps; ++b) {
              const int64_t off = px + b - pad0;
              if (off & 1) continue;
              const float k = fir.k2[a * taps + b];
              const float* sp = src.data() + margin + off / 2;  // off is even: exact division
              for (int64_t m = 0; 2 * m + px < wy; ++m) acc[2 * m + px] += k * sp[m];
            }
          }
        }
        for (int64_t x = 0; x < wy; ++x) drow[x] = static_cast<scalar_t>(acc[x]);
      }
    }
  });
}

at::Tensor blur_depthwise(const at::Tensor& y, const at::Tensor& blur, int64_t pad0, int64_t pad1) {
  const auto channels = y.size(1);
  auto k = blur.to(y.dtype()).flip({0, 1});
  auto w = k.view({1, 1, k.size(0), k.size(1)}).expand({channels, 1, k.size(0), k.size(1)}).contiguous();
  auto padded = at::constant_pad_nd(y, {pad0, pad1, pad0, pad1}, 0);
  return at::conv2d(padded, w, {}, at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, channels);
}

}  // namespace

// x [B,I,H,W], weight [O,I,k,k], style [B,I]; noise [H',W'] (already times its strength) or undefined;
// bias [O] or undefined; blur [t,t] (needed when upsample); skip [B,O,H'/2,W'/2] with skip_kernel [t,t]: the
// output gets skip up-sampled 2x (upfirdn2d up=2, pad ((t-2+1)/2+1, (t-2)/2)) added last (the ToRGB skip branch).
at::Tensor modulated_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& style, double scale,
                          bool demodulate, bool upsample, const c10::optional<at::Tensor>& blur,
                          const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias,
                          bool activate, const c10::optional<at::Tensor>& skip,
                          const c10::optional<at::Tensor>& skip_kernel) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4 && style.dim() == 2, "modulated_conv: bad ranks");
  TORCH_CHECK(x.size(0) == style.size(0) && x.size(1) == weight.size(1) && style.size(1) == x.size(1),
              "modulated_conv: x, weight and style disagree on batch or input channels");
  TORCH_CHECK(!skip.has_value() || skip_kernel.has_value(), "modulated_conv: skip needs its up-sampling kernel");
  const int64_t batch = x.size(0), in_ch = x.size(1), out_ch = weight.size(0), k = weight.size(2);
  const auto dtype = x.scalar_type();
  auto s = style * scale;                                          // [B, I]
  const Derived derived = derived_for(weight, upsample);
  at::Tensor d = demodulate ? demod_coefficients(derived.w2, s) : at::Tensor();
  at::Tensor nz = noise.has_value() ? noise->to(dtype).contiguous().view({-1}) : at::Tensor();
  at::Tensor bs = bias.has_value() ? bias->to(dtype).contiguous() : at::Tensor();
  const float* dp = d.defined() ? d.data_ptr<float>() : nullptr;
  at::Tensor y;
  if (upsample) {
    TORCH_CHECK(blur.has_value(), "modulated_conv: upsample needs the blur kernel");
    // channels-last lets oneDNN run the transposed conv (the NCHW transposed conv falls back to a slow kernel)
    auto xm = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
    at::mul_out(xm, x, s.to(dtype).view({batch, in_ch, 1, 1}));
    auto t = at::conv_transpose2d(xm, derived.transposed, {}, 2, 0);
    // the reference's paddings, with Python's floor division (p may be negative)
    const int64_t p = (blur->size(0) - 2) - (k - 1), pad0 = floor_div2(p + 1) + 1, pad1 = floor_div2(p) + 1;
    TORCH_CHECK(pad0 >= 0 && pad1 >= 0, "modulated_conv: blur kernel too small for this conv kernel");
    const Fir fir = make_fir(*blur);
    t = t.contiguous(at::MemoryFormat::ChannelsLast);  // what oneDNN returns for a channels-last input
    const int64_t hy = t.size(2) + pad0 + pad1 - fir.taps + 1, wy = t.size(3) + pad0 + pad1 - fir.taps + 1;
    TORCH_CHECK(!nz.defined() || nz.numel() == hy * wy, "modulated_conv: noise size mismatch");
    if (!fir.kv.empty()) {
      y = at::empty({batch, out_ch, hy, wy}, x.options());
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "modulated_conv_blur_epilogue", [&] {
        blur_epilogue<scalar_t>(t, y, fir, pad0, dp, nz.defined() ? nz.data_ptr<scalar_t>() : nullptr,
                                bs.defined() ? bs.data_ptr<scalar_t>() : nullptr, activate);
      });
    } else {  // a non-separable blur: depthwise conv, then the plain epilogue
      y = blur_depthwise(t, *blur, pad0, pad1).contiguous();
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "modulated_conv_epilogue", [&] {
        epilogue<scalar_t>(y, dp, nz.defined() ? nz.data_ptr<scalar_t>() : nullptr,
                           bs.defined() ? bs.data_ptr<scalar_t>() : nullptr, activate);
      });
    }
  } else {
    if (k == 1) {  // per-sample modulated [O, I] weight (tiny) times the unmodulated input: one GEMM a sample
      y = at::empty({batch, out_ch, x.size(2), x.size(3)}, x.options());
      auto xc = x.contiguous();
      auto w1 = weight.reshape({out_ch, in_ch});
      auto sd = s.to(dtype);
      for (int64_t b = 0; b < batch; ++b) {
        auto wb = w1 * sd[b].view({1, in_ch});
        auto yb = y[b].view({out_ch, -1});
        at::mm_out(yb, wb, xc[b].view({in_ch, -1}));
      }
    } else {  // plain convs stay NCHW: layout conversions cost more than they gain there (measured)
      auto xm = x * s.to(dtype).view({batch, in_ch, 1, 1});
      y = at::conv2d(xm, weight, {}, 1, k / 2).contiguous();
    }
    TORCH_CHECK(!nz.defined() || nz.numel() == y.size(2) * y.size(3), "modulated_conv: noise size mismatch");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "modulated_conv_epilogue", [&] {
      epilogue<scalar_t>(y, dp, nz.defined() ? nz.data_ptr<scalar_t>() : nullptr,
                         bs.defined() ? bs.data_ptr<scalar_t>() : nullptr, activate);
    });
  }
  if (skip.has_value()) {
    const Fir fir = make_fir(*skip_kernel);
    const int64_t p = fir.taps - 2;
    auto sk = skip->to(dtype).contiguous();
    TORCH_CHECK(sk.dim() == 4 && sk.size(0) == batch && sk.size(1) == y.size(1) && 2 * sk.size(2) == y.size(2) &&
                    2 * sk.size(3) == y.size(3),
                "modulated_conv: skip must be [B, O, H/2, W/2] of the output");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "modulated_conv_skip", [&] {
      add_upsampled<scalar_t>(y, sk, fir, floor_div2(p + 1) + 1);
    });
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("modulated_conv", &modulated_conv, "fused StyleGAN2 modulated conv layer (CPU)", py::arg("x"),
        py::arg("weight"), py::arg("style"), py::arg("scale"), py::arg("demodulate"), py::arg("upsample"),
        py::arg("blur"), py::arg("noise"), py::arg("bias"), py::arg("activate"), py::arg("skip") = py::none(),
        py::arg("skip_kernel") = py::none());
}
