// Fused CPU loops of rnnlab's hand-written LSTM sequence (rnnlab.cells.lstm._LSTMSequence:
// Greff et al. 2017's variants, peepholes, FGR's gate recurrence) and Cho-form GRU sequence
// (rnnlab.cells.gru._ChoGRUSequence): per step one matrix product per recurrent weight block and
// one vectorised pass of the gate math (at::vec, i.e. Sleef's exp/tanh as torch's own kernels
// use), forward and backward through time; plus the whole-sequence products around the loops.
// Built on first use by rnnlab.cells._fused (torch.utils.cpp_extension.load); the ops are
// registered under torch.ops.rnnlab_fused. The equations are those of the module docstrings of
// rnnlab/cells/lstm.py and rnnlab/cells/gru.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

// Flags of the LSTM variant, bit k = (input_gate, forget_gate, output_gate, input_activation,
// output_activation, peepholes, coupled): the order of rnnlab.cells.lstm.LSTMVariant's fields;
// bit 7 (no_store): a forward that no backward will follow, which stores only c(t) and h(t).
struct Flags {
  bool use_i, use_f, use_o, act_g, act_s, peep, coupled, no_store;
  explicit Flags(int64_t bits)
      : use_i(bits & 1), use_f(bits & 2), use_o(bits & 4), act_g(bits & 8), act_s(bits & 16),
        peep(bits & 32), coupled(bits & 64), no_store(bits & 128) {}
};

template <typename V>
inline V sigmoid(const V& x) {
  // as torch's vectorised sigmoid kernel: 1 / (1 + exp(-x))
  return (V(1) + x.neg().exp()).reciprocal();
}

// tanh in float32 from one exp and one division, 2.6x faster than Sleef's tanh here (0.47 vs
// 1.22 ns per value, docs/speed.md): sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1],
// whose absolute error is about that of e (<= 9e-8 measured against float64), and for
// |x| < 1/8, where 1 - e loses relative accuracy, the Taylor polynomial of tanh to x^9
// (the first term left out, 1382 x^11 / 155925, is < 1e-11 relative there). NaN and +-inf as tanh. float64 keeps Sleef's.
template <typename V>
inline V tanh_(const V& x) {
  using T = typename V::value_type;
  if constexpr (std::is_same_v<T, float>) {
    const V ax = x.abs();
    const V e = (ax * V(-2.0f)).exp();
    const V t = (V(1.0f) - e) / (V(1.0f) + e);
    const V x2 = x * x;
    V p = at::vec::fmadd(x2, V(62.0f / 2835.0f), V(-17.0f / 315.0f));
    p = at::vec::fmadd(x2, p, V(2.0f / 15.0f));
    p = at::vec::fmadd(x2, p, V(-1.0f / 3.0f));
    p = at::vec::fmadd(x2, p, V(1.0f));
    const V signed_t = V::blendv(t, t.neg(), x < V(0.0f));
    return V::blendv(signed_t, x * p, ax < V(0.125f));
  } else {
    return x.tanh();
  }
}

// c += a @ B for one step of a recurrence, with a (batch x K) and c (batch x N) rows of the
// time-major buffers and B (K x N) the same at every step. Two ways: oneDNN's batch-reduce GEMM
// micro-kernel through at::native::cpublas::brgemm (float32, one thread: measured 2-3x faster
// than one addmm per step, and faster than oneDNN's prepacked weight, see docs/speed.md), with
// B copied once per call into column blocks of kColBlock (each block's K x kColBlock entries
// contiguous, so a step streams B in order); else one addmm per step, or oneDNN's prepacked
// weight when the caller gives one (float32 with several threads, large weights; see
// rnnlab.cells.base.StepMatmul).
class StepProduct {
 public:
  // column blocks from this many columns on (below, one block: measured equal at N = 512)
  static constexpr int64_t kBlockFrom = 1024;
  static constexpr int64_t kColBlock = 64;

  // b_kn: B as a (K x N) tensor (any strides); packed: oneDNN's reorder of B^T, or none
  StepProduct(const Tensor& b_kn, const std::optional<Tensor>& packed)
      : b_kn_(b_kn), packed_(packed) {
#ifdef CPUBLAS_BRGEMM_F32F32F32
    use_brgemm_ = b_kn.scalar_type() == at::kFloat && at::get_num_threads() == 1;
    if (use_brgemm_) {
      k_ = b_kn.size(0);
      n_ = b_kn.size(1);
      block_ = n_ >= kBlockFrom ? kColBlock : n_;
      if (block_ == n_ && b_kn.is_contiguous()) {
        b_blocked_ = b_kn;  // one block: B itself (e.g. W_hh in the backward)
      } else {
        b_blocked_ = at::empty({k_ * n_}, b_kn.options());
        for (int64_t j = 0; j < n_; j += block_) {
          const int64_t w = std::min(block_, n_ - j);
          b_blocked_.narrow(0, k_ * j, k_ * w).view({k_, w}).copy_(b_kn.narrow(1, j, w));
        }
      }
    }
#endif
  }

  // c (M x N, row stride ldc) = or += a (M x K, row stride lda) @ B, in the brgemm mode
  void run(float* c, int64_t ldc, const float* a, int64_t lda, int64_t m, bool accumulate) const {
#ifdef CPUBLAS_BRGEMM_F32F32F32
    const float* b = b_blocked_.data_ptr<float>();
    for (int64_t j = 0; j < n_; j += block_) {
      const int64_t w = std::min(block_, n_ - j);
      at::native::cpublas::brgemm(m, w, k_, lda, w, ldc, accumulate, a, b + k_ * j, c + j,
                                  false);
    }
#else
    TORCH_CHECK(false, "StepProduct::run needs the brgemm mode");
#endif
  }

  // c (M x N, row stride ldc) += a (M x K, contiguous rows) @ B; the tensors are views of the
  // same memory, used by the addmm and prepacked paths
  template <typename scalar_t>
  void add_(scalar_t* c, int64_t ldc, const scalar_t* a, int64_t m, const Tensor& c_view,
            const Tensor& a_view) const {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (use_brgemm_) {
        run(c, ldc, a, k_, m, true);
        return;
      }
    }
    Tensor cv = c_view;
    if (packed_.has_value()) {
      cv.add_(linear(a_view));
    } else {
      cv.addmm_(a_view, b_kn_);
    }
  }

  // c (M x N, contiguous) = a @ B, in the dense (brgemm) mode only
  template <typename scalar_t>
  void set_(scalar_t* c, const scalar_t* a, int64_t m) const {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (use_brgemm_) {
        run(c, n_, a, k_, m, false);
        return;
      }
    }
    TORCH_CHECK(false, "StepProduct::set_ needs the brgemm mode");
  }

  // c (M x N, row stride ldc) = or += a (M x K, row stride lda) @ B; the views are used off the
  // dense mode
  template <typename scalar_t>
  void mm(scalar_t* c, int64_t ldc, const scalar_t* a, int64_t lda, int64_t m, bool accumulate,
          const Tensor& c_view, const Tensor& a_view) const {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (use_brgemm_) {
        run(c, ldc, a, lda, m, accumulate);
        return;
      }
    }
    Tensor cv = c_view;
    if (packed_.has_value()) {
      Tensor r = linear(a_view.contiguous());
      if (accumulate) cv.add_(r); else cv.copy_(r);
    } else if (accumulate) {
      cv.addmm_(a_view, b_kn_);
    } else {
      at::mm_out(cv, a_view, b_kn_);
    }
  }

  // true when the products work on the pointers alone (no tensor views needed)
  bool dense() const { return use_brgemm_; }

  void release() const {
#ifdef CPUBLAS_BRGEMM_F32F32F32
    if (use_brgemm_) at::native::cpublas::brgemm_release(false);
#endif
  }

  bool packed() const { return !use_brgemm_ && packed_.has_value(); }

  // a @ B with the prepacked weight
  Tensor linear(const Tensor& a) const {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
            .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                          c10::string_view, c10::List<std::optional<at::Scalar>>,
                          std::optional<c10::string_view>)>();
    return op.call(a, *packed_, std::nullopt, "none", c10::List<std::optional<at::Scalar>>(),
                   std::nullopt);
  }

 private:
  Tensor b_kn_, b_blocked_;
  std::optional<Tensor> packed_;
  bool use_brgemm_ = false;
  int64_t k_ = 0, n_ = 0, block_ = 1;
};

// x (R x K) @ w^T + bias (R x N; w: N x K, any strides) for the whole-sequence products: the
// input projection x W_ih^T + b, and in the backward pass dX = dA W_ih and the weight gradients
// dW = dA^T X as x = dA^T, w = X^T. With brgemm in blocks of rows where it applies (float32,
// one thread; measured 1.3-2x faster than torch's matmul on these shapes), else torch's linear.
Tensor linear(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias) {
#ifdef CPUBLAS_BRGEMM_F32F32F32
  if (x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat &&
      at::get_num_threads() == 1) {
    const int64_t rows = x.size(0), d = x.size(1), n = w.size(0);
    Tensor xc = x.contiguous(), wt = w.t().contiguous();
    Tensor out = at::empty({rows, n}, x.options());
    float* o = out.data_ptr<float>();
    if (bias.has_value() && bias->defined()) {
      Tensor bc = bias->contiguous();
      const float* b = bc.data_ptr<float>();
      for (int64_t r = 0; r < rows; ++r) std::copy(b, b + n, o + r * n);
    } else {
      std::fill(o, o + rows * n, 0.0f);
    }
    constexpr int64_t kBlock = 16;  // rows per micro-kernel call
    for (int64_t r = 0; r < rows; r += kBlock) {
      at::native::cpublas::brgemm(std::min(kBlock, rows - r), n, d, d, n, n, true,
                                  xc.data_ptr<float>() + r * d, wt.data_ptr<float>(),
                                  o + r * n, false);
    }
    at::native::cpublas::brgemm_release(false);
    return out;
  }
#endif
  return at::linear(x, w, bias);
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const std::optional<Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<scalar_t>() : nullptr;
}

// Rows are spread over threads only when a step has enough work to pay for it.
inline int64_t grain(int64_t hidden) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(hidden, 1)); }

// f(b, j, n) for every row b of a step and every chunk j..j+n-1 of its hidden units (n up to the
// vector width), rows spread over threads as above
template <typename V, typename F>
void for_each_chunk(int64_t batch, int64_t hidden, const F& f) {
  at::parallel_for(0, batch, grain(hidden), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t j = 0; j < hidden; j += V::size()) {
        f(b, j, std::min<int64_t>(V::size(), hidden - j));
      }
    }
  });
}

// ------------------------------------------------------------------------------------------
// LSTM forward: gates (T, B, 4H) holds W x + b on entry and i, f, g, o on exit (unless
// no_store). FGR (gate recurrence, rec_gg given): a_k(t) += [gs(t-1) W_gg^T]_k for k in i, f, o,
// with gs(t) = (i(t), f(t), o(t)) and gs(-1) = gs0.
template <typename scalar_t>
void lstm_forward_steps(Tensor& gates, const Tensor& h0, const Tensor& c0, const StepProduct& rec,
                        const scalar_t* p_i, const scalar_t* p_f, const scalar_t* p_o,
                        const Flags& s, const StepProduct* rec_gg, const Tensor& gs0,
                        Tensor& cells, Tensor& squashed, Tensor& hs) {
  using V = at::vec::Vectorized<scalar_t>;
  const int64_t steps = gates.size(0), batch = gates.size(1), hidden = hs.size(2);
  const int64_t W = V::size();
  const V one(1);
  const int64_t bh = batch * hidden;
  const bool store = !s.no_store;
  scalar_t* const g_base = gates.data_ptr<scalar_t>();
  scalar_t* const c_base = cells.data_ptr<scalar_t>();
  scalar_t* const s_base = (s.act_s && store) ? squashed.data_ptr<scalar_t>() : c_base;
  scalar_t* const h_base = hs.data_ptr<scalar_t>();
  Tensor rec_buf = rec.dense() ? at::empty({batch, 4 * hidden}, gates.options()) : Tensor();
  scalar_t* const rec_ptr = rec.dense() ? rec_buf.data_ptr<scalar_t>() : nullptr;
  // FGR: the previous gates (B, 3H) and their product with W_gg^T (B, 3H), small buffers
  Tensor gs_buf, gg_buf;
  scalar_t* gs_ptr = nullptr;
  scalar_t* gg_ptr = nullptr;
  if (rec_gg != nullptr) {
    gs_buf = gs0.contiguous().clone();
    gg_buf = at::empty({batch, 3 * hidden}, gates.options());
    gs_ptr = gs_buf.data_ptr<scalar_t>();
    gg_ptr = gg_buf.data_ptr<scalar_t>();
  }
  for (int64_t t = 0; t < steps; ++t) {
    scalar_t* gp = g_base + t * 4 * bh;
    const scalar_t* hprev = t == 0 ? h0.data_ptr<scalar_t>() : h_base + (t - 1) * bh;
    // the recurrent part into a small buffer that stays in cache, which the gate pass adds
    // (measured: adding into the step's rows of the large gates buffer took twice as long)
    const scalar_t* rec_out = nullptr;
    Tensor rec_step;
    if (rec.dense()) {
      rec.set_(rec_ptr, hprev, batch);
      rec_out = rec_ptr;
    } else if (rec.packed()) {
      rec_step = rec.linear(t == 0 ? h0 : hs[t - 1]).contiguous();
      rec_out = rec_step.data_ptr<scalar_t>();
    } else {
      rec.add_(gp, 4 * hidden, hprev, batch, gates[t], t == 0 ? h0 : hs[t - 1]);
    }
    if (rec_gg != nullptr) {
      rec_gg->mm(gg_ptr, 3 * hidden, gs_ptr, 3 * hidden, batch, false, gg_buf, gs_buf);
    }
    const scalar_t* cprev = t == 0 ? c0.data_ptr<scalar_t>() : c_base + (t - 1) * bh;
    scalar_t* cp = c_base + t * bh;
    scalar_t* sp = s_base + t * bh;
    scalar_t* hp = h_base + t * bh;
    at::parallel_for(0, batch, grain(hidden), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        scalar_t* gi = gp + b * 4 * hidden;
        scalar_t* gf = gi + hidden;
        scalar_t* gg = gi + 2 * hidden;
        scalar_t* go = gi + 3 * hidden;
        const scalar_t* cpb = cprev + b * hidden;
        scalar_t* cb = cp + b * hidden;
        scalar_t* sb = sp + b * hidden;
        scalar_t* hb = hp + b * hidden;
        for (int64_t j = 0; j < hidden; j += W) {
          const int64_t n = std::min(W, hidden - j);
          V c_prev = V::loadu(cpb + j, n);
          V a_i = V::loadu(gi + j, n), a_f = V::loadu(gf + j, n);
          V a_g = V::loadu(gg + j, n), a_o = V::loadu(go + j, n);
          if (rec_out != nullptr) {
            const scalar_t* ri = rec_out + b * 4 * hidden;
            a_i = a_i + V::loadu(ri + j, n);
            a_f = a_f + V::loadu(ri + hidden + j, n);
            a_g = a_g + V::loadu(ri + 2 * hidden + j, n);
            a_o = a_o + V::loadu(ri + 3 * hidden + j, n);
          }
          if (gg_ptr != nullptr) {
            const scalar_t* rg = gg_ptr + b * 3 * hidden + j;
            a_i = a_i + V::loadu(rg, n);
            a_f = a_f + V::loadu(rg + hidden, n);
            a_o = a_o + V::loadu(rg + 2 * hidden, n);
          }
          if (s.peep) {
            a_i = a_i + c_prev * V::loadu(p_i + j, n);
            a_f = a_f + c_prev * V::loadu(p_f + j, n);
          }
          V i = s.use_i ? sigmoid(a_i) : one;
          V f = s.coupled ? one - i : (s.use_f ? sigmoid(a_f) : one);
          V g = s.act_g ? tanh_(a_g) : a_g;
          V c = f * c_prev + i * g;
          V o = one;
          if (s.use_o) {
            if (s.peep) a_o = a_o + c * V::loadu(p_o + j, n);
            o = sigmoid(a_o);
          }
          V sq = s.act_s ? tanh_(c) : c;
          V h = s.use_o ? o * sq : sq;
          if (store) {
            i.store(gi + j, n);
            f.store(gf + j, n);
            g.store(gg + j, n);
            o.store(go + j, n);
            if (s.act_s) sq.store(sb + j, n);
          }
          if (gs_ptr != nullptr) {
            scalar_t* gsb = gs_ptr + b * 3 * hidden + j;
            i.store(gsb, n);
            f.store(gsb + hidden, n);
            o.store(gsb + 2 * hidden, n);
          }
          c.store(cb + j, n);
          h.store(hb + j, n);
        }
      }
    });
  }
  rec.release();
}

std::vector<Tensor> lstm_forward(Tensor gates, const Tensor& h0, const Tensor& c0,
                                 const Tensor& w_hh, const std::optional<Tensor>& p_i,
                                 const std::optional<Tensor>& p_f, const std::optional<Tensor>& p_o,
                                 const std::optional<Tensor>& packed_w_hh, int64_t flags,
                                 const std::optional<Tensor>& w_gg,
                                 const std::optional<Tensor>& gs0) {
  TORCH_CHECK(gates.is_contiguous() && gates.dim() == 3, "gates must be contiguous (T, B, 4H)");
  const Flags s(flags);
  const int64_t steps = gates.size(0), batch = gates.size(1), hidden = w_hh.size(1);
  TORCH_CHECK(gates.size(2) == 4 * hidden, "gates must have 4H columns");
  TORCH_CHECK(!s.peep || (p_i.has_value() && p_f.has_value() && p_o.has_value()),
              "peepholes flagged but not given");
  const bool fgr = w_gg.has_value() && w_gg->defined();
  TORCH_CHECK(!fgr || (gs0.has_value() && gs0->defined() && !s.no_store && s.use_i && s.use_f &&
                       s.use_o && !s.coupled),
              "the gate recurrence needs gs0, all three gates and stored activations");
  Tensor cells = at::empty({steps, batch, hidden}, gates.options());
  Tensor squashed =
      (s.act_s && !s.no_store) ? at::empty_like(cells) : at::empty({0}, gates.options());
  Tensor hs = at::empty_like(cells);
  Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  StepProduct rec(w_hh.t(), packed_w_hh);
  std::optional<StepProduct> rec_gg;
  if (fgr) rec_gg.emplace(w_gg->t(), std::nullopt);  // gs W_gg^T
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "rnnlab_lstm_forward", [&] {
    std::optional<Tensor> pi, pf, po;
    if (s.peep) { pi = p_i->contiguous(); pf = p_f->contiguous(); po = p_o->contiguous(); }
    lstm_forward_steps<scalar_t>(gates, h0c, c0c, rec, ptr_or_null<scalar_t>(pi),
                                 ptr_or_null<scalar_t>(pf), ptr_or_null<scalar_t>(po), s,
                                 fgr ? &*rec_gg : nullptr, fgr ? *gs0 : Tensor(), cells,
                                 squashed, hs);
  });
  return {cells, squashed, hs};
}

// LSTM backward through time: the gradient of every step's gate pre-activations (rows of
// removed gates zero), and of h0, c0 (and for FGR of gs0). d_h_ext / d_c_ext (T, B, H),
// d_g_ext (T, B, 3H): the gradient reaching h(t), c(t), gs(t) from outside the recurrence
// (absent: zero).
template <typename scalar_t>
void lstm_backward_steps(const Tensor& gates, const Tensor& cells, const Tensor& squashed,
                         const Tensor& c0, const StepProduct& rec, const scalar_t* p_i,
                         const scalar_t* p_f, const scalar_t* p_o, const Tensor& d_h_ext,
                         const Tensor& d_c_ext, const Flags& s, const StepProduct* rec_gg,
                         const Tensor& d_g_ext, Tensor& d_pre, Tensor& dh, Tensor& dc,
                         Tensor& d_gs) {
  using V = at::vec::Vectorized<scalar_t>;
  const int64_t steps = gates.size(0), batch = gates.size(1), hidden = cells.size(2);
  const int64_t W = V::size();
  const V one(1), zero(0);
  scalar_t* dcp = dc.data_ptr<scalar_t>();
  const int64_t bh = batch * hidden;
  scalar_t* const dh_ptr = dh.data_ptr<scalar_t>();
  scalar_t* const dpre_base = d_pre.data_ptr<scalar_t>();
  const scalar_t* const ext_base = d_h_ext.defined() ? d_h_ext.data_ptr<scalar_t>() : nullptr;
  // FGR: the gradient of gs(t) (B, 3H) and the pre-activation gradients of i, f, o of step
  // t + 1 side by side (B, 3H), what W_gg multiplies
  const bool fgr = rec_gg != nullptr;
  Tensor difo = fgr ? at::empty({batch, 3 * hidden}, gates.options()) : Tensor();
  scalar_t* const difo_ptr = fgr ? difo.data_ptr<scalar_t>() : nullptr;
  scalar_t* const dgs_ptr = fgr ? d_gs.data_ptr<scalar_t>() : nullptr;
  const scalar_t* const gext_base =
      (fgr && d_g_ext.defined()) ? d_g_ext.data_ptr<scalar_t>() : nullptr;
  // dh = dpre(t) @ W_hh added to dh
  auto add_recurrent = [&](int64_t t) {
    if (rec.dense()) {
      rec.add_(dh_ptr, hidden, dpre_base + t * 4 * bh, batch, Tensor(), Tensor());
    } else {
      rec.add_(dh_ptr, hidden, dpre_base + t * 4 * bh, batch, dh, d_pre[t]);
    }
  };
  // d_gs (+)= difo @ W_gg
  auto gate_recurrent = [&](bool accumulate) {
    rec_gg->mm(dgs_ptr, 3 * hidden, difo_ptr, 3 * hidden, batch, accumulate, d_gs, difo);
  };
  for (int64_t t = steps - 1; t >= 0; --t) {
    // dh(t) = the external gradient + the recurrence's d_pre(t+1) W_hh
    if (ext_base != nullptr) {
      std::copy(ext_base + t * bh, ext_base + (t + 1) * bh, dh_ptr);
    } else {
      std::fill(dh_ptr, dh_ptr + bh, scalar_t(0));
    }
    if (t < steps - 1) add_recurrent(t + 1);
    if (fgr) {
      // d gs(t) = the external gradient + d_ifo(t+1) W_gg
      if (gext_base != nullptr) {
        std::copy(gext_base + t * 3 * bh, gext_base + (t + 1) * 3 * bh, dgs_ptr);
      } else {
        std::fill(dgs_ptr, dgs_ptr + 3 * bh, scalar_t(0));
      }
      if (t < steps - 1) gate_recurrent(true);
    }
    const scalar_t* gp = gates.data_ptr<scalar_t>() + t * 4 * bh;
    const scalar_t* cprev =
        t == 0 ? c0.data_ptr<scalar_t>() : cells.data_ptr<scalar_t>() + (t - 1) * bh;
    const scalar_t* sp = (s.act_s ? squashed : cells).data_ptr<scalar_t>() + t * bh;
    const scalar_t* dhp = dh_ptr;
    const scalar_t* dcext =
        d_c_ext.defined() ? d_c_ext.data_ptr<scalar_t>() + t * bh : nullptr;
    scalar_t* dp = dpre_base + t * 4 * bh;
    at::parallel_for(0, batch, grain(hidden), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* gi = gp + b * 4 * hidden;
        const scalar_t* gf = gi + hidden;
        const scalar_t* gg = gi + 2 * hidden;
        const scalar_t* go = gi + 3 * hidden;
        scalar_t* di_p = dp + b * 4 * hidden;
        scalar_t* df_p = di_p + hidden;
        scalar_t* dg_p = di_p + 2 * hidden;
        scalar_t* do_p = di_p + 3 * hidden;
        const scalar_t* cpb = cprev + b * hidden;
        const scalar_t* sb = sp + b * hidden;
        const scalar_t* dhb = dhp + b * hidden;
        scalar_t* dcb = dcp + b * hidden;
        for (int64_t j = 0; j < hidden; j += W) {
          const int64_t n = std::min(W, hidden - j);
          V d_h = V::loadu(dhb + j, n);
          V d_c = V::loadu(dcb + j, n);
          if (dcext != nullptr) d_c = d_c + V::loadu(dcext + b * hidden + j, n);
          V c_prev = V::loadu(cpb + j, n), sq = V::loadu(sb + j, n);
          V i = V::loadu(gi + j, n), f = V::loadu(gf + j, n);
          V g = V::loadu(gg + j, n), o = V::loadu(go + j, n);
          // FGR: the gradient reaching the activations i, f, o through gs(t)
          V e_i = zero, e_f = zero, e_o = zero;
          if (fgr) {
            const scalar_t* e = dgs_ptr + b * 3 * hidden + j;
            e_i = V::loadu(e, n);
            e_f = V::loadu(e + hidden, n);
            e_o = V::loadu(e + 2 * hidden, n);
          }
          // h = o * s
          V d_o = zero, d_s = d_h;
          if (s.use_o) {
            d_o = (fgr ? d_h * sq + e_o : d_h * sq) * (one - o) * o;
            d_s = d_h * o;
          }
          d_c = d_c + (s.act_s ? d_s * (one - sq * sq) : d_s);
          if (s.use_o && s.peep) d_c = d_c + d_o * V::loadu(p_o + j, n);
          // c = f * c_prev + i * g
          V d_i = zero, d_g = d_c;
          if (s.use_i) {
            V di = d_c * g;
            if (s.coupled) di = di - d_c * c_prev;  // f = 1 - i
            if (fgr) di = di + e_i;
            d_i = di * (one - i) * i;
            d_g = d_c * i;
          }
          if (s.act_g) d_g = d_g * (one - g * g);
          V d_f = zero;
          if (s.use_f && !s.coupled) {
            d_f = (fgr ? d_c * c_prev + e_f : d_c * c_prev) * (one - f) * f;
          }
          V d_cp = (s.use_f || s.coupled) ? d_c * f : d_c;
          if (s.peep) {
            if (s.use_i) d_cp = d_cp + d_i * V::loadu(p_i + j, n);
            if (s.use_f && !s.coupled) d_cp = d_cp + d_f * V::loadu(p_f + j, n);
          }
          d_i.store(di_p + j, n);
          d_f.store(df_p + j, n);
          d_g.store(dg_p + j, n);
          d_o.store(do_p + j, n);
          d_cp.store(dcb + j, n);
          if (fgr) {
            scalar_t* q = difo_ptr + b * 3 * hidden + j;
            d_i.store(q, n);
            d_f.store(q + hidden, n);
            d_o.store(q + 2 * hidden, n);
          }
        }
      }
    });
  }
  std::fill(dh_ptr, dh_ptr + bh, scalar_t(0));
  add_recurrent(0);
  if (fgr) gate_recurrent(false);  // d gs0 = d_ifo(0) W_gg
  rec.release();
}

std::vector<Tensor> lstm_backward(const Tensor& gates, const Tensor& cells,
                                  const Tensor& squashed, const Tensor& c0, const Tensor& w_hh,
                                  const std::optional<Tensor>& p_i,
                                  const std::optional<Tensor>& p_f,
                                  const std::optional<Tensor>& p_o,
                                  const std::optional<Tensor>& packed_w_hh_t,
                                  const std::optional<Tensor>& d_h_ext,
                                  const std::optional<Tensor>& d_c_ext, int64_t flags,
                                  const std::optional<Tensor>& w_gg,
                                  const std::optional<Tensor>& d_g_ext) {
  const Flags s(flags);
  const int64_t batch = gates.size(1), hidden = w_hh.size(1);
  TORCH_CHECK(gates.is_contiguous() && cells.is_contiguous(), "saved buffers must be contiguous");
  TORCH_CHECK(!s.no_store, "no backward after a forward that stored no activations");
  const bool fgr = w_gg.has_value() && w_gg->defined();
  Tensor d_pre = at::empty_like(gates);
  Tensor dh = at::empty({batch, hidden}, gates.options());
  Tensor dc = at::zeros({batch, hidden}, gates.options());
  Tensor d_gs = at::empty({fgr ? batch : 0, 3 * hidden}, gates.options());
  Tensor dhe = (d_h_ext.has_value() && d_h_ext->defined()) ? d_h_ext->contiguous() : Tensor();
  Tensor dce = (d_c_ext.has_value() && d_c_ext->defined()) ? d_c_ext->contiguous() : Tensor();
  Tensor dge = (fgr && d_g_ext.has_value() && d_g_ext->defined()) ? d_g_ext->contiguous()
                                                                    : Tensor();
  StepProduct rec(w_hh, packed_w_hh_t);  // d_pre(t+1) @ W_hh
  std::optional<StepProduct> rec_gg;
  if (fgr) rec_gg.emplace(*w_gg, std::nullopt);  // d_ifo @ W_gg
  Tensor c0c = c0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "rnnlab_lstm_backward", [&] {
    std::optional<Tensor> pi, pf, po;
    if (s.peep) { pi = p_i->contiguous(); pf = p_f->contiguous(); po = p_o->contiguous(); }
    lstm_backward_steps<scalar_t>(gates, cells, squashed, c0c, rec, ptr_or_null<scalar_t>(pi),
                                  ptr_or_null<scalar_t>(pf), ptr_or_null<scalar_t>(po), dhe, dce,
                                  s, fgr ? &*rec_gg : nullptr, dge, d_pre, dh, dc, d_gs);
  });
  return {d_pre, dh, dc, d_gs};
}

// ------------------------------------------------------------------------------------------
// Cho-form GRU (rnnlab.cells.gru): pre (T, B, 3H) holds W_ih x + b_ih + b_hh on entry and the
// activations r, z, n on exit; returns r * h(t-1) and h(t) for every step.
template <typename scalar_t>
void gru_forward_steps(Tensor& pre, const Tensor& h0, const StepProduct& rec_rz,
                       const StepProduct& rec_n, Tensor& rh, Tensor& hs) {
  using V = at::vec::Vectorized<scalar_t>;
  const int64_t steps = pre.size(0), batch = pre.size(1), hidden = hs.size(2);
  const int64_t bh = batch * hidden;
  Tensor s_rz = at::empty({batch, 2 * hidden}, pre.options());
  Tensor s_n = at::empty({batch, hidden}, pre.options());
  scalar_t* const srz = s_rz.data_ptr<scalar_t>();
  scalar_t* const sn = s_n.data_ptr<scalar_t>();
  scalar_t* const p_base = pre.data_ptr<scalar_t>();
  scalar_t* const rh_base = rh.data_ptr<scalar_t>();
  scalar_t* const h_base = hs.data_ptr<scalar_t>();
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor hprev_v = t == 0 ? h0 : hs[t - 1];
    const scalar_t* hprev = t == 0 ? h0.data_ptr<scalar_t>() : h_base + (t - 1) * bh;
    scalar_t* pp = p_base + t * 3 * bh;
    scalar_t* rhp = rh_base + t * bh;
    scalar_t* hp = h_base + t * bh;
    rec_rz.mm(srz, 2 * hidden, hprev, hidden, batch, false, s_rz, hprev_v);
    for_each_chunk<V>(batch, hidden, [&](int64_t b, int64_t j, int64_t n) {
      scalar_t* pr = pp + b * 3 * hidden + j;
      const scalar_t* sr = srz + b * 2 * hidden + j;
      V r = sigmoid(V::loadu(pr, n) + V::loadu(sr, n));
      V z = sigmoid(V::loadu(pr + hidden, n) + V::loadu(sr + hidden, n));
      r.store(pr, n);
      z.store(pr + hidden, n);
      (r * V::loadu(hprev + b * hidden + j, n)).store(rhp + b * hidden + j, n);
    });
    rec_n.mm(sn, hidden, rhp, hidden, batch, false, s_n, rh[t]);
    for_each_chunk<V>(batch, hidden, [&](int64_t b, int64_t j, int64_t n) {
      scalar_t* pr = pp + b * 3 * hidden + j;
      V nn = (V::loadu(pr + 2 * hidden, n) + V::loadu(sn + b * hidden + j, n)).tanh();
      V z = V::loadu(pr + hidden, n);
      V h = V::loadu(hprev + b * hidden + j, n);
      nn.store(pr + 2 * hidden, n);
      (nn + z * (h - nn)).store(hp + b * hidden + j, n);
    });
  }
  rec_rz.release();
}

std::vector<Tensor> gru_cho_forward(Tensor pre, const Tensor& h0, const Tensor& w_hh,
                                    const std::optional<Tensor>& packed_rz,
                                    const std::optional<Tensor>& packed_n) {
  TORCH_CHECK(pre.is_contiguous() && pre.dim() == 3, "pre must be contiguous (T, B, 3H)");
  const int64_t steps = pre.size(0), batch = pre.size(1), hidden = w_hh.size(1);
  TORCH_CHECK(pre.size(2) == 3 * hidden, "pre must have 3H columns");
  Tensor rh = at::empty({steps, batch, hidden}, pre.options());
  Tensor hs = at::empty_like(rh);
  Tensor h0c = h0.contiguous();
  StepProduct rec_rz(w_hh.narrow(0, 0, 2 * hidden).t(), packed_rz);
  StepProduct rec_n(w_hh.narrow(0, 2 * hidden, hidden).t(), packed_n);
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "rnnlab_gru_cho_forward", [&] {
    gru_forward_steps<scalar_t>(pre, h0c, rec_rz, rec_n, rh, hs);
  });
  return {rh, hs};
}

// Cho-form GRU backward through time: the pre-activation gradients of r, z, n at every step and
// the gradient of h0, from d_ext (T, B, H; absent: zero), the gradient reaching h(t) from
// outside the recurrence.
template <typename scalar_t>
void gru_backward_steps(const Tensor& acts, const Tensor& hs, const Tensor& h0,
                        const StepProduct& back_rz, const StepProduct& back_n,
                        const Tensor& d_ext, Tensor& d_pre, Tensor& dh) {
  using V = at::vec::Vectorized<scalar_t>;
  const int64_t steps = acts.size(0), batch = acts.size(1), hidden = hs.size(2);
  const int64_t bh = batch * hidden;
  const V one(1);
  Tensor d_rh = at::empty({batch, hidden}, acts.options());
  Tensor carry = at::empty({batch, hidden}, acts.options());
  scalar_t* drh = d_rh.data_ptr<scalar_t>();
  const scalar_t* a_base = acts.data_ptr<scalar_t>();
  const scalar_t* h_base = hs.data_ptr<scalar_t>();
  const scalar_t* ext = d_ext.defined() ? d_ext.data_ptr<scalar_t>() : nullptr;
  scalar_t* const dp_base = d_pre.data_ptr<scalar_t>();
  scalar_t* dhp = dh.data_ptr<scalar_t>();
  if (ext != nullptr) {
    std::copy(ext + (steps - 1) * bh, ext + steps * bh, dhp);
  } else {
    std::fill(dhp, dhp + bh, scalar_t(0));
  }
  for (int64_t t = steps - 1; t >= 0; --t) {
    const scalar_t* ap = a_base + t * 3 * bh;
    const scalar_t* hprev = t == 0 ? h0.data_ptr<scalar_t>() : h_base + (t - 1) * bh;
    scalar_t* dp = dp_base + t * 3 * bh;
    scalar_t* cp = carry.data_ptr<scalar_t>();
    // h = n + z (h_prev - n)
    for_each_chunk<V>(batch, hidden, [&](int64_t b, int64_t j, int64_t n) {
      const scalar_t* a = ap + b * 3 * hidden + j;
      scalar_t* d = dp + b * 3 * hidden + j;
      V d_h = V::loadu(dhp + b * hidden + j, n);
      V z = V::loadu(a + hidden, n), nn = V::loadu(a + 2 * hidden, n);
      V h = V::loadu(hprev + b * hidden + j, n);
      (d_h * (h - nn) * (one - z) * z).store(d + hidden, n);
      ((d_h - d_h * z) * (one - nn * nn)).store(d + 2 * hidden, n);
    });
    // a_n = ... + W_hn (r * h_prev): d(r h_prev) = d_n W_hn
    back_n.mm(drh, hidden, dp + 2 * hidden, 3 * hidden, batch, false, d_rh,
              d_pre[t].narrow(1, 2 * hidden, hidden));
    for_each_chunk<V>(batch, hidden, [&](int64_t b, int64_t j, int64_t n) {
      const scalar_t* a = ap + b * 3 * hidden + j;
      V d_h = V::loadu(dhp + b * hidden + j, n);
      V r = V::loadu(a, n), z = V::loadu(a + hidden, n);
      V h = V::loadu(hprev + b * hidden + j, n);
      V g = V::loadu(drh + b * hidden + j, n);
      (g * h * (one - r) * r).store(dp + b * 3 * hidden + j, n);
      // dh(t-1) = external + dh z + d(r h) r (+ d_rz W_hrz below)
      V c = d_h * z + g * r;
      if (t > 0 && ext != nullptr) c = c + V::loadu(ext + (t - 1) * bh + b * hidden + j, n);
      c.store(cp + b * hidden + j, n);
    });
    back_rz.mm(cp, hidden, dp, 3 * hidden, batch, true, carry,
               d_pre[t].narrow(1, 0, 2 * hidden));
    std::copy(cp, cp + bh, dhp);
  }
  back_rz.release();
}

std::vector<Tensor> gru_cho_backward(const Tensor& acts, const Tensor& hs, const Tensor& h0,
                                     const Tensor& w_hh, const std::optional<Tensor>& packed_rz_t,
                                     const std::optional<Tensor>& packed_n_t,
                                     const std::optional<Tensor>& d_ext) {
  const int64_t batch = acts.size(1), hidden = w_hh.size(1);
  TORCH_CHECK(acts.is_contiguous() && hs.is_contiguous(), "saved buffers must be contiguous");
  Tensor d_pre = at::empty_like(acts);
  Tensor dh = at::empty({batch, hidden}, acts.options());
  Tensor de = (d_ext.has_value() && d_ext->defined()) ? d_ext->contiguous() : Tensor();
  StepProduct back_rz(w_hh.narrow(0, 0, 2 * hidden), packed_rz_t);
  StepProduct back_n(w_hh.narrow(0, 2 * hidden, hidden), packed_n_t);
  Tensor h0c = h0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "rnnlab_gru_cho_backward", [&] {
    gru_backward_steps<scalar_t>(acts, hs, h0c, back_rz, back_n, de, d_pre, dh);
  });
  return {d_pre, dh};
}

}  // namespace

TORCH_LIBRARY(rnnlab_fused, m) {
  m.def("linear(Tensor x, Tensor w, Tensor? bias) -> Tensor");
  m.def("gru_cho_forward(Tensor(a!) pre, Tensor h0, Tensor w_hh, Tensor? packed_rz, "
        "Tensor? packed_n) -> Tensor[]");
  m.def("gru_cho_backward(Tensor acts, Tensor hs, Tensor h0, Tensor w_hh, Tensor? packed_rz_t, "
        "Tensor? packed_n_t, Tensor? d_ext) -> Tensor[]");
  m.def("lstm_forward(Tensor(a!) gates, Tensor h0, Tensor c0, Tensor w_hh, Tensor? p_i, "
        "Tensor? p_f, Tensor? p_o, Tensor? packed_w_hh, int flags, Tensor? w_gg=None, "
        "Tensor? gs0=None) -> Tensor[]");
  m.def("lstm_backward(Tensor gates, Tensor cells, Tensor squashed, Tensor c0, Tensor w_hh, "
        "Tensor? p_i, Tensor? p_f, Tensor? p_o, Tensor? packed_w_hh_t, Tensor? d_h_ext, "
        "Tensor? d_c_ext, int flags, Tensor? w_gg=None, Tensor? d_g_ext=None) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(rnnlab_fused, CPU, m) {
  m.impl("gru_cho_forward", &gru_cho_forward);
  m.impl("gru_cho_backward", &gru_cho_backward);
  m.impl("linear", &linear);
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}

// oneDNN's prepacked weight is an MkldnnCPU tensor: calls carrying one dispatch there
TORCH_LIBRARY_IMPL(rnnlab_fused, MkldnnCPU, m) {
  m.impl("gru_cho_forward", &gru_cho_forward);
  m.impl("gru_cho_backward", &gru_cho_backward);
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}
