// Inference kernels of rnnlab.seq2seq (no gradients): the additive (Bahdanau) attention energies
// and step, and the candidate selection of the batched beam search. Built on first use by
// rnnlab.seq2seq._kernels (torch.utils.cpp_extension.load through rnnlab._native.NativeOps);
// the ops are registered under torch.ops.rnnlab_seq2seq. The Python functions they replace
// (rnnlab.seq2seq._common.additive_energy / masked_softmax and the torch.topk over the float64
// candidate totals in rnnlab.seq2seq.decoding.beam_search) compute the same functions and stay
// the path for other devices, for gradients and when native code is off.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

template <typename scalar_t>
using Vec = at::vec::Vectorized<scalar_t>;

// tanh(x) = 1 - 2 / (exp(2x) + 1), with at::vec's fast exp (exp_u20: within 20 ulp in float32;
// in float64 the exact Sleef exp). d tanh / d log(e) <= 1/2, so tanh is off by at most ~10
// float32 ulp of 1 (absolute; measured: no worse than Sleef's tanh in the energies), like the
// torch path's 2 sigmoid(2x) - 1; Sleef's tanh (Vectorized::tanh) ran 3-4x slower here.
// Saturates: exp overflows to inf (tanh = 1) or underflows to 0 (tanh = -1).
template <typename scalar_t>
inline Vec<scalar_t> fast_tanh(const Vec<scalar_t>& x) {
  using V = Vec<scalar_t>;
  const V e = (x + x).exp_u20();
  return V(scalar_t(1)) - V(scalar_t(2)) / (e + V(scalar_t(1)));
}

template <typename scalar_t>
inline scalar_t hsum(const Vec<scalar_t>& v) {
  alignas(64) scalar_t buf[Vec<scalar_t>::size()];
  v.store(buf);
  scalar_t r = 0;
  for (int i = 0; i < Vec<scalar_t>::size(); ++i) r += buf[i];
  return r;
}

// v^T tanh(q + k) over A entries (the tail loaded zero-padded: tanh(0) * 0 adds nothing)
template <typename scalar_t>
inline scalar_t energy_one(const scalar_t* q, const scalar_t* k, const scalar_t* v, int64_t A) {
  using V = Vec<scalar_t>;
  constexpr int64_t W = V::size();
  V acc0(scalar_t(0)), acc1(scalar_t(0));
  int64_t a = 0;
  for (; a + 2 * W <= A; a += 2 * W) {  // two accumulators: independent FMA chains
    acc0 = at::vec::fmadd(fast_tanh(V::loadu(q + a) + V::loadu(k + a)), V::loadu(v + a), acc0);
    acc1 = at::vec::fmadd(fast_tanh(V::loadu(q + a + W) + V::loadu(k + a + W)),
                          V::loadu(v + a + W), acc1);
  }
  for (; a < A; a += W) {
    const int64_t c = std::min<int64_t>(W, A - a);
    acc0 = at::vec::fmadd(fast_tanh(V::loadu(q + a, c) + V::loadu(k + a, c)), V::loadu(v + a, c),
                          acc0);
  }
  return hsum<scalar_t>(acc0 + acc1);
}

void check_energy_args(const Tensor& query, const Tensor& keys, const Tensor& v) {
  TORCH_CHECK(query.dim() == 2 && keys.dim() == 3 && v.dim() == 1,
              "rnnlab_seq2seq: query (N, A), keys (N, S, A) and v (A,) expected, got ",
              query.sizes(), ", ", keys.sizes(), ", ", v.sizes());
  TORCH_CHECK(keys.size(0) == query.size(0) && keys.size(2) == query.size(1) &&
                  v.size(0) == query.size(1),
              "rnnlab_seq2seq: mismatched shapes query ", query.sizes(), ", keys ", keys.sizes(),
              ", v ", v.sizes());
  TORCH_CHECK(query.scalar_type() == keys.scalar_type() && v.scalar_type() == keys.scalar_type(),
              "rnnlab_seq2seq: query, keys and v must share one dtype");
}

// e[n, s] = v^T tanh(query[n] + keys[n, s])   (Bahdanau et al. 2015, eq. 6, after W and U)
Tensor additive_energy(const Tensor& query_, const Tensor& keys_, const Tensor& v_) {
  check_energy_args(query_, keys_, v_);
  const Tensor query = query_.contiguous(), keys = keys_.contiguous(), v = v_.contiguous();
  const int64_t N = keys.size(0), S = keys.size(1), A = keys.size(2);
  Tensor out = at::empty({N, S}, keys.options());
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "additive_energy", [&] {
    const scalar_t *q = query.data_ptr<scalar_t>(), *k = keys.data_ptr<scalar_t>(),
                   *w = v.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n)
        for (int64_t s = 0; s < S; ++s) o[n * S + s] = energy_one(q + n * A, k + (n * S + s) * A, w, A);
    });
  });
  return out;
}

// One attention step: the energies above on the valid positions (mask True), their softmax
// over the source (exactly 0 on masked positions; a row without a valid position is NaN, as
// torch.softmax of all -inf), and the context sum_s a[n, s] values[n, s] -> (attention (N, S),
// context (N, D)). The source may be shared by groups of rows: keys (M, S, A), mask (M, S) and
// values (M, S, D) with N = G M, row n reading source n / G (a beam's K rows read their
// sentence's source without a K-fold copy of it).
std::tuple<Tensor, Tensor> additive_attention(const Tensor& query_, const Tensor& keys_,
                                              const Tensor& v_, const Tensor& mask_,
                                              const Tensor& values_) {
  TORCH_CHECK(query_.dim() == 2 && keys_.dim() == 3 && v_.dim() == 1 &&
                  keys_.size(2) == query_.size(1) && v_.size(0) == query_.size(1),
              "rnnlab_seq2seq: query (N, A), keys (M, S, A) and v (A,) expected, got ",
              query_.sizes(), ", ", keys_.sizes(), ", ", v_.sizes());
  TORCH_CHECK(query_.scalar_type() == keys_.scalar_type() &&
                  v_.scalar_type() == keys_.scalar_type(),
              "rnnlab_seq2seq: query, keys and v must share one dtype");
  const int64_t N = query_.size(0), M = keys_.size(0), S = keys_.size(1), A = keys_.size(2);
  TORCH_CHECK(M >= 1 && N % M == 0, "rnnlab_seq2seq: ", N, " query rows cannot share ", M,
              " sources evenly");
  const int64_t G = N / M;
  TORCH_CHECK(mask_.scalar_type() == at::kBool && mask_.dim() == 2 && mask_.size(0) == M &&
                  mask_.size(1) == S,
              "rnnlab_seq2seq: mask must be bool (M, S) = (", M, ", ", S, "), got ",
              mask_.scalar_type(), " ", mask_.sizes());
  TORCH_CHECK(values_.dim() == 3 && values_.size(0) == M && values_.size(1) == S &&
                  values_.scalar_type() == keys_.scalar_type(),
              "rnnlab_seq2seq: values must be (M, S, D) = (", M, ", ", S, ", D) of the keys' "
              "dtype, got ", values_.sizes());
  const Tensor query = query_.contiguous(), keys = keys_.contiguous(), v = v_.contiguous(),
               mask = mask_.contiguous(), values = values_.contiguous();
  const int64_t D = values.size(2);
  Tensor attn = at::empty({N, S}, keys.options());
  Tensor ctx = at::empty({N, D}, keys.options());
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "additive_attention", [&] {
    using V = Vec<scalar_t>;
    constexpr int64_t W = V::size();
    const scalar_t *q = query.data_ptr<scalar_t>(), *k = keys.data_ptr<scalar_t>(),
                   *w = v.data_ptr<scalar_t>(), *val = values.data_ptr<scalar_t>();
    const bool* mk = mask.data_ptr<bool>();
    scalar_t *a = attn.data_ptr<scalar_t>(), *c = ctx.data_ptr<scalar_t>();
    at::parallel_for(0, N, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        const int64_t src = n / G;
        const bool* m = mk + src * S;
        const scalar_t *kn = k + src * S * A, *vn = val + src * S * D;
        scalar_t* an = a + n * S;
        scalar_t top = -std::numeric_limits<scalar_t>::infinity();
        bool any = false;
        for (int64_t s = 0; s < S; ++s) {
          if (m[s]) {
            an[s] = energy_one(q + n * A, kn + s * A, w, A);
            top = std::max(top, an[s]);
            any = true;
          }
        }
        scalar_t total = 0;
        for (int64_t s = 0; s < S; ++s) {
          an[s] = m[s] ? std::exp(an[s] - top) : scalar_t(0);
          total += an[s];
        }
        const scalar_t scale = any ? scalar_t(1) / total
                                   : std::numeric_limits<scalar_t>::quiet_NaN();
        for (int64_t s = 0; s < S; ++s) an[s] = any ? an[s] * scale : scale;
        scalar_t* cn = c + n * D;
        for (int64_t d = 0; d < D; d += W) {
          const int64_t cnt = std::min<int64_t>(W, D - d);
          V acc(scalar_t(0));
          for (int64_t s = 0; s < S; ++s) {
            if (!any || m[s]) acc = at::vec::fmadd(V(an[s]), V::loadu(vn + s * D + d, cnt), acc);
          }
          acc.store(cn + d, cnt);
        }
      }
    });
  });
  return {attn, ctx};
}

// ------------------------------------------------------------------ beam candidates

struct Cand {
  double value;
  int64_t index;
};

// the ranking of the candidates: larger total first, among equal totals the smaller index
// (beam * V + token) first; NaN ranks below everything
inline bool before(const Cand& x, const Cand& y) {
  if (std::isnan(x.value)) return std::isnan(y.value) && x.index < y.index;
  if (std::isnan(y.value)) return true;
  return x.value > y.value || (x.value == y.value && x.index < y.index);
}

// the n best of a stream of candidates: a heap whose front is the worst of them (std's heap
// with `before` as its "less": the "largest" is the one ranked last), O(log n) per entry
class Best {
 public:
  explicit Best(int64_t n) : n_(n) { buf_.reserve(n); }
  bool full() const { return static_cast<int64_t>(buf_.size()) == n_; }
  const Cand& worst() const { return buf_.front(); }
  void offer(const Cand& c) {
    if (full()) {
      if (!before(c, buf_.front())) return;
      std::pop_heap(buf_.begin(), buf_.end(), before);
      buf_.back() = c;
    } else {
      buf_.push_back(c);
    }
    std::push_heap(buf_.begin(), buf_.end(), before);
  }
  // best first (the heap is consumed)
  const std::vector<Cand>& sorted() {
    std::sort_heap(buf_.begin(), buf_.end(), before);
    return buf_;
  }

 private:
  int64_t n_;
  std::vector<Cand> buf_;
};

// A lower bound ("floor") on the n-th best total of a sentence, from the row of its best beam
// k: the lane-wise maxima of R interleaved accumulators over the row's full vector chunks are
// R * W distinct entries, so at least n totals are >= s_k + (the n-th largest of them) (float64
// addition is monotone). -inf when it does not apply (no finite score, too few chunks, NaN).
template <typename scalar_t>
double sentence_floor(const scalar_t* logp, const scalar_t* lse, const double* score,
                      int64_t Kt, int64_t V, int64_t n) {
  using Vv = Vec<scalar_t>;
  constexpr int64_t W = Vv::size();
  const double none = -std::numeric_limits<double>::infinity();
  int64_t kb = -1;
  for (int64_t k = 0; k < Kt; ++k)
    if (std::isfinite(score[k]) && (kb < 0 || score[k] > score[kb])) kb = k;
  const int64_t R = (n + W - 1) / W, chunks = V / W;
  if (kb < 0 || chunks < R || R > 64) return none;
  const scalar_t* row = logp + kb * V;
  std::vector<Vv> acc(R, Vv(-std::numeric_limits<scalar_t>::infinity()));
  for (int64_t j = 0; j < chunks; ++j)
    acc[j % R] = at::vec::maximum(acc[j % R], Vv::loadu(row + j * W));
  std::vector<scalar_t> vals(R * W);
  for (int64_t r = 0; r < R; ++r) acc[r].store(vals.data() + r * W);
  for (const scalar_t x : vals)
    if (std::isnan(x)) return none;
  std::nth_element(vals.begin(), vals.begin() + (n - 1), vals.end(), std::greater<scalar_t>());
  // with logits, the same entries' log-probabilities: fl(x - lse) is monotone in x too
  const scalar_t t0 = lse ? static_cast<scalar_t>(vals[n - 1] - lse[kb]) : vals[n - 1];
  return std::isfinite(t0) ? score[kb] + static_cast<double>(t0) : none;
}

// the screen for a row of score s: entries below it cannot make a total >= w (the current
// n-th best or the floor), with a margin far above every rounding of the float64 sums
// (with logits, the bound on x with x - off >= that bound, off the row's log-sum-exp, lowered
// by a further margin for the rounding of x - off in scalar_t)
template <typename scalar_t>
inline scalar_t screen_bound(double w, double s, scalar_t off) {
  double low = (w - s) - 1e-6 * (1.0 + std::abs(w) + std::abs(s));
  if (off != scalar_t(0)) {
    const double eps = std::numeric_limits<scalar_t>::epsilon();
    low = low + off - 8 * eps * (1.0 + std::abs(low) + std::abs(double(off)));
  }
  return std::nextafter(static_cast<scalar_t>(low), -std::numeric_limits<scalar_t>::infinity());
}

// The n best of cand[b, k * V + t] = scores[b, k] + logp[b * Kt + k, t] (float64 totals of the
// float64 running scores and the step's log-probabilities, promoted exactly as torch's mixed
// addition does) for one sentence, sorted by `before`: the values and indices torch.topk of
// the materialised (B, Kt * V) totals returns, up to the order of exactly equal totals (torch
// leaves that unspecified; here the smaller index comes first). Each row's entries are screened
// with a vectorised comparison in logp's own dtype against the larger of the floor and the
// current n-th best (lowered by a margin), so only totals that may enter are formed in
// float64 and offered; `offer` applies the exact ranking.
template <typename scalar_t>
void beam_topk_sentence(const scalar_t* logp, const scalar_t* lse, const double* score,
                        int64_t Kt, int64_t V, int64_t n, Best& best) {
  using Vv = Vec<scalar_t>;
  constexpr int64_t W = Vv::size();
  const double floor = sentence_floor(logp, lse, score, Kt, V, n);
  const bool have_floor = std::isfinite(floor);
  auto bound = [&]() {  // the total a candidate must reach (may be -inf or NaN: no screen)
    if (!best.full()) return floor;
    const double w = best.worst().value;
    return have_floor && !(w > floor) ? floor : w;
  };
  for (int64_t k = 0; k < Kt; ++k) {
    const double s = score[k];
    const scalar_t* row = logp + k * V;
    const int64_t base = k * V;
    // the row's log-probabilities: logp itself, or logits minus the row's log-sum-exp
    const scalar_t off = lse ? lse[k] : scalar_t(0);
    auto value = [&](int64_t j) {
      return s + static_cast<double>(lse ? static_cast<scalar_t>(row[j] - off) : row[j]);
    };
    if ((std::isnan(s) || s == -std::numeric_limits<double>::infinity()) &&
        (have_floor || (best.full() && !std::isnan(best.worst().value)))) {
      continue;  // -inf (a dead beam) + anything is -inf or NaN: none of them can enter
    }
    int64_t t = 0;
    while (t < V) {
      double w = bound();
      if (!(std::isfinite(s) && std::isfinite(w))) {
        best.offer({value(t), base + t});
        ++t;
        continue;
      }
      scalar_t low = screen_bound<scalar_t>(w, s, off);
      for (; t + W <= V; t += W) {
        uint64_t pass = static_cast<uint64_t>(~(Vv::loadu(row + t) >= Vv(low)).zero_mask()) &
                        ((uint64_t{1} << W) - 1);
        if (pass == 0) continue;
        while (pass) {
          const int i = __builtin_ctzll(pass);
          pass &= pass - 1;
          best.offer({value(t + i), base + t + i});
        }
        const double w2 = bound();
        if (w2 != w) {  // the n-th best rose: a tighter screen
          w = w2;
          low = screen_bound<scalar_t>(w, s, off);
        }
      }
      for (; t < V; ++t) best.offer({value(t), base + t});
    }
  }
}

// log sum_j exp(x_j) of a row, as torch's log_softmax forms it: max + log(sum exp(x - max)),
// the sum in scalar_t lanes of Sleef's exp (within 1 ulp); -inf for a row of -inf
template <typename scalar_t>
scalar_t row_lse(const scalar_t* x, int64_t V) {
  using Vv = Vec<scalar_t>;
  constexpr int64_t W = Vv::size();
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  Vv m0(ninf), m1(ninf), m2(ninf), m3(ninf);  // four chains: no wait on one latency
  int64_t j = 0;
  for (; j + 4 * W <= V; j += 4 * W) {
    m0 = at::vec::maximum(m0, Vv::loadu(x + j));
    m1 = at::vec::maximum(m1, Vv::loadu(x + j + W));
    m2 = at::vec::maximum(m2, Vv::loadu(x + j + 2 * W));
    m3 = at::vec::maximum(m3, Vv::loadu(x + j + 3 * W));
  }
  for (; j + W <= V; j += W) m0 = at::vec::maximum(m0, Vv::loadu(x + j));
  alignas(64) scalar_t buf[W];
  at::vec::maximum(at::vec::maximum(m0, m1), at::vec::maximum(m2, m3)).store(buf);
  scalar_t m = ninf;
  for (int64_t i = 0; i < W; ++i) m = std::max(m, buf[i]);
  for (; j < V; ++j) m = std::max(m, x[j]);
  if (m == ninf || std::isnan(m)) return m;
  const Vv vm(m);
  Vv s0(scalar_t(0)), s1(scalar_t(0));
  for (j = 0; j + 2 * W <= V; j += 2 * W) {
    s0 = s0 + (Vv::loadu(x + j) - vm).exp();
    s1 = s1 + (Vv::loadu(x + j + W) - vm).exp();
  }
  for (; j + W <= V; j += W) s0 = s0 + (Vv::loadu(x + j) - vm).exp();
  scalar_t total = hsum<scalar_t>(s0 + s1);
  for (; j < V; ++j) total += std::exp(x[j] - m);
  return m + std::log(total);
}

// logp is the step's log-probabilities (B * Kt, V), or with `logits` its logits, whose
// log-probabilities x - lse(row) (as log_softmax: the same value up to its rounding) are formed
// here only for the candidates that may enter
std::tuple<Tensor, Tensor> beam_topk(const Tensor& logp_, const Tensor& scores_, int64_t n,
                                     bool logits) {
  TORCH_CHECK(scores_.dim() == 2 && scores_.scalar_type() == at::kDouble,
              "rnnlab_seq2seq.beam_topk: scores must be float64 (B, Kt), got ",
              scores_.scalar_type(), " ", scores_.sizes());
  const int64_t B = scores_.size(0), Kt = scores_.size(1);
  TORCH_CHECK(logp_.dim() == 2 && logp_.size(0) == B * Kt,
              "rnnlab_seq2seq.beam_topk: logp must be (B * Kt, V) = (", B * Kt, ", V), got ",
              logp_.sizes());
  const int64_t V = logp_.size(1);
  TORCH_CHECK(n >= 1 && n <= Kt * V, "rnnlab_seq2seq.beam_topk: n=", n, " outside [1, ",
              Kt * V, "]");
  const Tensor logp = logp_.contiguous(), scores = scores_.contiguous();
  Tensor top = at::empty({B, n}, scores.options());
  Tensor idx = at::empty({B, n}, scores.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(logp.scalar_type(), "beam_topk", [&] {
    const scalar_t* lp = logp.data_ptr<scalar_t>();
    const double* sc = scores.data_ptr<double>();
    double* tp = top.data_ptr<double>();
    int64_t* ip = idx.data_ptr<int64_t>();
    at::parallel_for(0, B, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        Best best(n);
        std::vector<scalar_t> lse(logits ? Kt : 0);
        for (int64_t k = 0; k < static_cast<int64_t>(lse.size()); ++k)
          lse[k] = row_lse(lp + (b * Kt + k) * V, V);
        beam_topk_sentence<scalar_t>(lp + b * Kt * V, logits ? lse.data() : nullptr,
                                     sc + b * Kt, Kt, V, n, best);
        const auto& items = best.sorted();
        for (int64_t j = 0; j < n; ++j) {
          tp[b * n + j] = items[j].value;
          ip[b * n + j] = items[j].index;
        }
      }
    });
  });
  return {top, idx};
}

// One step of the beam search's bookkeeping for every sentence (rnnlab.seq2seq.decoding,
// _advance_python computes the same in torch ops; its comments say why): from the n = min(2K,
// Kt V) best extensions, the finished ones among the first K ranks (scored top / lp), the
// n_best best finished scores so far, the K best extensions that do not stop (then, if fewer,
// the stopped or non-finite ones, in rank order: their score is -inf) as the new alive beams,
// and the end rule. Returns (fin_score, fin_top, fin_beam, fin_tok) (B, K), kept (B, n_best),
// scores (B, K), parent beams (B, K), tokens (B, K), flat rows b * Kt + parent (B * K),
// done (B,), all done ().
std::vector<Tensor> beam_step(const Tensor& logp, const Tensor& scores_, int64_t K,
                              const Tensor& limits_, int64_t t, int64_t eos, double lp,
                              const Tensor& kept_, const Tensor& lp_max_, const Tensor& done_,
                              bool logits) {
  const int64_t B = scores_.size(0), Kt = scores_.size(1);
  TORCH_CHECK(logp.dim() == 2, "rnnlab_seq2seq.beam_step: logp must be 2-D");
  const int64_t V = logp.size(1), n = std::min<int64_t>(2 * K, Kt * V);
  TORCH_CHECK(K >= 1 && n >= K, "rnnlab_seq2seq.beam_step: K=", K, " and ", Kt * V,
              " candidates per sentence");
  const Tensor limits = limits_.to(at::kLong).contiguous(), kept = kept_.contiguous(),
               lp_max = lp_max_.contiguous(), done = done_.contiguous();
  TORCH_CHECK(limits.numel() == B && lp_max.numel() == B && done.numel() == B &&
                  kept.dim() == 2 && kept.size(0) == B && kept.scalar_type() == at::kDouble &&
                  lp_max.scalar_type() == at::kDouble && done.scalar_type() == at::kBool,
              "rnnlab_seq2seq.beam_step: limits, lp_max, done (B,) and kept (B, n_best) float64 "
              "expected");
  const int64_t NB = kept.size(1);
  auto [top, idx] = beam_topk(logp, scores_, n, logits);
  auto f64 = scores_.options().dtype(at::kDouble), i64 = scores_.options().dtype(at::kLong);
  Tensor fin_score = at::empty({B, K}, f64), fin_top = at::empty({B, K}, f64),
         fin_beam = at::empty({B, K}, i64), fin_tok = at::empty({B, K}, i64),
         kept_new = at::empty({B, NB}, f64), scores = at::empty({B, K}, f64),
         parent = at::empty({B, K}, i64), token = at::empty({B, K}, i64),
         flat = at::empty({B * K}, i64), done_new = at::empty({B}, done.options()),
         all_done = at::empty({}, done.options());
  const double inf = std::numeric_limits<double>::infinity();
  const double *tp = top.data_ptr<double>(), *kp = kept.data_ptr<double>(),
               *lm = lp_max.data_ptr<double>();
  const int64_t *ip = idx.data_ptr<int64_t>(), *lim = limits.data_ptr<int64_t>();
  const bool* dn = done.data_ptr<bool>();
  double *fs = fin_score.data_ptr<double>(), *ft = fin_top.data_ptr<double>(),
         *kn = kept_new.data_ptr<double>(), *sc = scores.data_ptr<double>();
  int64_t *fb = fin_beam.data_ptr<int64_t>(), *fk = fin_tok.data_ptr<int64_t>(),
          *pa = parent.data_ptr<int64_t>(), *tk = token.data_ptr<int64_t>(),
          *fl = flat.data_ptr<int64_t>();
  bool* dnew = done_new.data_ptr<bool>();
  bool every = true;
  std::vector<double> pool(NB + K);
  std::vector<int64_t> order(n);
  std::vector<char> stops(n);
  for (int64_t b = 0; b < B; ++b) {
    const double* tb = tp + b * n;
    const int64_t* ib = ip + b * n;
    const bool stop_all = t + 1 >= lim[b];
    for (int64_t j = 0; j < n; ++j) stops[j] = stop_all || (eos >= 0 && ib[j] % V == eos);
    for (int64_t j = 0; j < K; ++j) {
      const bool final = stops[j] && std::isfinite(tb[j]);
      fs[b * K + j] = final ? tb[j] / lp : -inf;
      ft[b * K + j] = tb[j];
      fb[b * K + j] = ib[j] / V;
      fk[b * K + j] = ib[j] % V;
    }
    // the n_best largest of the kept and the new finished scores (values only)
    for (int64_t j = 0; j < NB; ++j) pool[j] = kp[b * NB + j];
    for (int64_t j = 0; j < K; ++j) pool[NB + j] = fs[b * K + j];
    std::partial_sort(pool.begin(), pool.begin() + NB, pool.end(), std::greater<double>());
    for (int64_t j = 0; j < NB; ++j) kn[b * NB + j] = pool[j];
    // alive: the extensions that neither stop nor are non-finite, in rank order, then the rest
    int64_t m = 0;
    for (int64_t j = 0; j < n; ++j)
      if (!stops[j] && std::isfinite(tb[j])) order[m++] = j;
    for (int64_t j = 0; j < n; ++j)
      if (stops[j] || !std::isfinite(tb[j])) order[m++] = j;
    double best_alive = -inf;
    bool nan_alive = false;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = order[k];
      const double s = stops[j] ? -inf : tb[j];
      sc[b * K + k] = s;
      pa[b * K + k] = ib[j] / V;
      tk[b * K + k] = ib[j] % V;
      fl[b * K + k] = b * Kt + ib[j] / V;
      if (std::isnan(s)) nan_alive = true; else best_alive = std::max(best_alive, s);
    }
    if (nan_alive) best_alive = std::numeric_limits<double>::quiet_NaN();  // as torch.max
    // the end rule: no alive hypothesis can beat the n_best-th finished one any more
    const bool d = dn[b] || stop_all || !std::isfinite(best_alive) ||
                   best_alive / lm[b] <= kn[b * NB + NB - 1];
    dnew[b] = d;
    if (d)
      for (int64_t k = 0; k < K; ++k) sc[b * K + k] = -inf;
    every = every && d;
  }
  all_done.fill_(every);
  return {fin_score, fin_top, fin_beam, fin_tok, kept_new, scores, parent, token, flat, done_new,
          all_done};
}

}  // namespace

TORCH_LIBRARY(rnnlab_seq2seq, m) {
  m.def("additive_energy(Tensor query, Tensor keys, Tensor v) -> Tensor");
  m.def("additive_attention(Tensor query, Tensor keys, Tensor v, Tensor mask, Tensor values) "
        "-> (Tensor, Tensor)");
  m.def("beam_topk(Tensor logp, Tensor scores, int n, bool logits=False) -> (Tensor, Tensor)");
  m.def("beam_step(Tensor logp, Tensor scores, int K, Tensor limits, int t, int eos, float lp, "
        "Tensor kept, Tensor lp_max, Tensor done, bool logits=False) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(rnnlab_seq2seq, CPU, m) {
  m.impl("additive_energy", &additive_energy);
  m.impl("additive_attention", &additive_attention);
  m.impl("beam_topk", &beam_topk);
  m.impl("beam_step", &beam_step);
}
