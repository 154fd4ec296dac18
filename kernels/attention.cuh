/* attention.cuh — multi-head attention with an online softmax (flash
 * attention's algorithm: the T x Tk score matrix is never stored), forward
 * and backward, causal or not, grouped-query heads (k_attention_* in
 * lib/kernels.h).
 *
 * Needs before it: common.cuh.
 *
 * Layout (PipecAttn has the field order of KAttn in lib/kernels.h and is
 * passed by value): for batch b, query t, head h, dim d
 *   q[(b*T + t)*q_stride + h*HS + d]
 *   k, v[(b*Tk + s)*kv_stride + hk*HS + d]   hk = h / (NH / NH_kv)
 *   out, dout[(b*T + t)*out_stride + h*HS + d]
 *   lse, delta[(b*NH + h)*T + t]   (fp32)
 * dq, dk, dv are written (=) with the strides of q, k, v (so a packed dqkv
 * buffer works). Scores are q.k / sqrt(HS). Causal: query t sees keys
 * s <= t + (Tk - T), i.e. the last query lines up with the last key (the
 * usual rule for T = Tk, and the one a KV cache needs for T < Tk). A query
 * that sees no key gets out = 0 and lse = -inf.
 *
 * The backward is two kernels, run in this order:
 *   pipec_attention_backward_dq    dq, and delta = rowsum(dout * out)
 *   pipec_attention_backward_dkdv  dk, dv (reads delta)
 * Each output element has one owner (the dkdv block of a kv head sums over
 * all the query heads of its group), so there are no atomics and the
 * gradients are the same every run.
 *
 * How a tile is computed. Keys (forward, dq) or queries (dkdv) come in
 * tiles of 32, one per lane: lane j computes the scores of its key against
 * the warp's rows, the warp combines them with shuffles, and each lane
 * accumulates the output dims lane, lane + 32, ... of every row. Tiles live
 * in shared memory as fp32 (converted once on load); rows read by lane j
 * are padded to HS + 1 floats so the 32 lanes hit 32 different banks.
 * Plain FMAs, no tensor cores: correct and readable first.
 *
 * Launch (block 128 = 4 warps for all three; dynamic shared memory in
 * bytes, which stays under the default 48 KiB up to HS = 128):
 *   forward  grid (ceil(T / 16), NH, B)     smem (80*HS + 32) * 4
 *   dq       grid (ceil(T / 8), NH, B)      smem (80*HS + 64) * 4
 *   dkdv     grid (ceil(Tk / 8), NH_kv, B)  smem (80*HS + 128) * 4
 * 4 warps x 4 query rows (forward) or x 2 rows (backward, which keeps twice
 * the tiles) is what fits those bytes for HS = 128 while every loaded tile
 * still serves 16 or 8 rows. __launch_bounds__(128, 4): four blocks per SM
 * (4 x 41 KiB of shared memory fits an A100 or H100 SM) leave ptxas up to
 * 128 registers a thread, enough for the accumulators without spills
 * (with the block size alone, ptxas 13.0 capped them at 64-72 and spilled).
 * HS may be at most
 * PIPEC_ATTN_MAX_HS (default 128; define it for larger heads, and raise the
 * kernel's shared memory limit above 48 KiB with cuFuncSetAttribute).
 */
#ifndef PIPEC_ATTENTION_CUH
#define PIPEC_ATTENTION_CUH

#ifndef PIPEC_ATTN_MAX_HS
#define PIPEC_ATTN_MAX_HS 128
#endif
#define ATTN_LANE_DIMS (PIPEC_ATTN_MAX_HS / 32) /* output dims per lane */
#define ATTN_TILE 32                            /* keys or queries per tile: one per lane */
#define ATTN_WARPS 4
#define ATTN_FWD_ROWS 4 /* query rows per warp, forward */
#define ATTN_BWD_ROWS 2 /* query (dq) or key (dkdv) rows per warp, backward */

struct PipecAttn {
  int B, T, Tk, NH, NH_kv, HS;
  int causal;
  int q_stride, kv_stride, out_stride;
};

/* keys [0, attn_key_end) are visible to query t */
__device__ __forceinline__ int attn_key_end(const PipecAttn &a, int t) {
  if (!a.causal) return a.Tk;
  const int e = t + 1 + (a.Tk - a.T);
  return e < 0 ? 0 : (e > a.Tk ? a.Tk : e);
}

/* Rows [0, nrows) of a tile (row stride src_stride elements) into shared
 * fp32 (row stride dst_stride), times scale; rows [nrows, tile_rows) are
 * zeroed so that masked lanes never multiply garbage (0 * NaN = NaN). A
 * warp per row, 16-byte loads where the row is aligned. */
template <typename T>
__device__ void attn_load_tile(float *dst, int dst_stride, const T *src, long src_stride, int nrows, int tile_rows,
                               int n, float scale) {
  constexpr int V = vec_width<T>();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  for (int r = warp; r < tile_rows; r += nwarps) {
    float *d = dst + r * dst_stride;
    if (r >= nrows) {
      for (int i = lane; i < n; i += 32) d[i] = 0.f;
      continue;
    }
    const T *s = src + r * src_stride;
    for_chunks<V>(n, chunking(s), lane, 32, [&](long i, auto w) {
      constexpr int W = decltype(w)::value;
      float x[W];
      load_f<W>(s + i, x);
#pragma unroll
      for (int k = 0; k < W; k++) d[i + k] = x[k] * scale;
    });
  }
}

__device__ __forceinline__ void attn_check(const PipecAttn &a) {
  if (a.HS > PIPEC_ATTN_MAX_HS) __trap(); /* loud, not wrong: recompile with a larger PIPEC_ATTN_MAX_HS */
}

/* out = softmax(q k^T / sqrt(HS)) v and lse = logsumexp of the scores, one
 * block per 16 queries of one head. */
template <typename T>
__device__ void attention_forward(T *out, float *lse, const T *q, const T *k, const T *v, PipecAttn a) {
  extern __shared__ float attn_smem[];
  constexpr int R = ATTN_FWD_ROWS, BQ = ATTN_WARPS * ATTN_FWD_ROWS;
  attn_check(a);
  const int HS = a.HS, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * BQ;
  const int hk = h / (a.NH / a.NH_kv);
  float *Qs = attn_smem;                 /* [BQ][HS] q / sqrt(HS) */
  float *Ks = Qs + BQ * HS;              /* [ATTN_TILE][HS + 1] */
  float *Vs = Ks + ATTN_TILE * (HS + 1); /* [ATTN_TILE][HS] */
  const T *q_bh = q + (long)b * a.T * a.q_stride + (long)h * HS;
  const T *k_bh = k + (long)b * a.Tk * a.kv_stride + (long)hk * HS;
  const T *v_bh = v + (long)b * a.Tk * a.kv_stride + (long)hk * HS;
  attn_load_tile(Qs, HS, q_bh + (long)t0 * a.q_stride, a.q_stride, min(BQ, a.T - t0), BQ, HS, 1.f / sqrtf((float)HS));

  /* per row: running max m, running sum l, unnormalised output o */
  float m[R], l[R], o[R][ATTN_LANE_DIMS];
  int key_end[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    m[r] = -PIPEC_INF;
    l[r] = 0.f;
#pragma unroll
    for (int i = 0; i < ATTN_LANE_DIMS; i++) o[r][i] = 0.f;
    key_end[r] = attn_key_end(a, t0 + warp * R + r);
  }
  const int block_key_end = attn_key_end(a, min(a.T, t0 + BQ) - 1);

  for (int s0 = 0; s0 < block_key_end; s0 += ATTN_TILE) {
    __syncthreads(); /* the previous tile is used up (and Qs is loaded) */
    const int nk = min(ATTN_TILE, a.Tk - s0);
    attn_load_tile(Ks, HS + 1, k_bh + (long)s0 * a.kv_stride, a.kv_stride, nk, ATTN_TILE, HS, 1.f);
    attn_load_tile(Vs, HS, v_bh + (long)s0 * a.kv_stride, a.kv_stride, nk, ATTN_TILE, HS, 1.f);
    __syncthreads();

    /* scores of this lane's key s0 + lane against the warp's rows */
    float sc[R];
#pragma unroll
    for (int r = 0; r < R; r++) sc[r] = 0.f;
    const float *k_row = Ks + lane * (HS + 1);
    for (int d = 0; d < HS; d++) {
      const float kd = k_row[d];
#pragma unroll
      for (int r = 0; r < R; r++) sc[r] += Qs[(warp * R + r) * HS + d] * kd;
    }

    /* online softmax: rescale what is there, add this tile's weights p */
    float p[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float s = s0 + lane < key_end[r] ? sc[r] : -PIPEC_INF;
      const float m_new = fmaxf(m[r], warp_max(s));
      if (m_new == -PIPEC_INF) { /* nothing visible yet (warp-uniform) */
        p[r] = 0.f;
        continue;
      }
      p[r] = expf(s - m_new);
      const float corr = expf(m[r] - m_new);
      l[r] = l[r] * corr + warp_sum(p[r]);
      m[r] = m_new;
#pragma unroll
      for (int i = 0; i < ATTN_LANE_DIMS; i++) o[r][i] *= corr;
    }

    /* o += p v: lane owns dims lane + 32 i; p of key j comes from lane j */
    for (int j = 0; j < ATTN_TILE; j++) {
      float vj[ATTN_LANE_DIMS];
#pragma unroll
      for (int i = 0; i < ATTN_LANE_DIMS; i++) {
        const int d = lane + 32 * i;
        vj[i] = d < HS ? Vs[j * HS + d] : 0.f;
      }
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float pj = __shfl_sync(PIPEC_FULL_MASK, p[r], j);
#pragma unroll
        for (int i = 0; i < ATTN_LANE_DIMS; i++) o[r][i] += pj * vj[i];
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; r++) {
    const int t = t0 + warp * R + r;
    if (t >= a.T) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    T *o_row = out + ((long)b * a.T + t) * a.out_stride + (long)h * HS;
#pragma unroll
    for (int i = 0; i < ATTN_LANE_DIMS; i++) {
      const int d = lane + 32 * i;
      if (d < HS) o_row[d] = from_float<T>(o[r][i] * inv);
    }
    if (lane == 0) lse[((long)b * a.NH + h) * a.T + t] = l[r] > 0.f ? m[r] + logf(l[r]) : -PIPEC_INF;
  }
}

/* dq = sum over keys of dS k / sqrt(HS), with P = exp(score - lse),
 * dS = P (dout.v - delta), delta = dout.out (written to delta for the dkdv
 * kernel). One block per 8 queries of one head. */
template <typename T>
__device__ void attention_backward_dq(T *dq, float *delta, const T *dout, const T *out, const float *lse, const T *q,
                                      const T *k, const T *v, PipecAttn a) {
  extern __shared__ float attn_smem[];
  constexpr int R = ATTN_BWD_ROWS, BQ = ATTN_WARPS * ATTN_BWD_ROWS;
  attn_check(a);
  const int HS = a.HS, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * BQ;
  const int hk = h / (a.NH / a.NH_kv);
  const float scale = 1.f / sqrtf((float)HS);
  float *Qs = attn_smem;                 /* [BQ][HS] q / sqrt(HS) */
  float *dOs = Qs + BQ * HS;             /* [BQ][HS] */
  float *Ks = dOs + BQ * HS;             /* [ATTN_TILE][HS + 1] */
  float *Vs = Ks + ATTN_TILE * (HS + 1); /* [ATTN_TILE][HS + 1] */
  const T *q_bh = q + (long)b * a.T * a.q_stride + (long)h * HS;
  const T *do_bh = dout + (long)b * a.T * a.out_stride + (long)h * HS;
  const T *k_bh = k + (long)b * a.Tk * a.kv_stride + (long)hk * HS;
  const T *v_bh = v + (long)b * a.Tk * a.kv_stride + (long)hk * HS;
  const int nq = min(BQ, a.T - t0);
  attn_load_tile(Qs, HS, q_bh + (long)t0 * a.q_stride, a.q_stride, nq, BQ, HS, scale);
  attn_load_tile(dOs, HS, do_bh + (long)t0 * a.out_stride, a.out_stride, nq, BQ, HS, 1.f);
  __syncthreads();

  float row_lse[R], row_delta[R], acc[R][ATTN_LANE_DIMS];
  int key_end[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int t = t0 + warp * R + r;
    const bool active = t < a.T;
    float dot = 0.f;
    if (active) {
      const T *o_row = out + ((long)b * a.T + t) * a.out_stride + (long)h * HS;
      for (int d = lane; d < HS; d += 32) dot += dOs[(warp * R + r) * HS + d] * to_float(o_row[d]);
    }
    row_delta[r] = warp_sum(dot);
    row_lse[r] = active ? lse[((long)b * a.NH + h) * a.T + t] : 0.f;
    if (active && lane == 0) delta[((long)b * a.NH + h) * a.T + t] = row_delta[r];
    key_end[r] = active ? attn_key_end(a, t) : 0;
#pragma unroll
    for (int i = 0; i < ATTN_LANE_DIMS; i++) acc[r][i] = 0.f;
  }
  const int block_key_end = attn_key_end(a, min(a.T, t0 + BQ) - 1);

  for (int s0 = 0; s0 < block_key_end; s0 += ATTN_TILE) {
    __syncthreads();
    const int nk = min(ATTN_TILE, a.Tk - s0);
    attn_load_tile(Ks, HS + 1, k_bh + (long)s0 * a.kv_stride, a.kv_stride, nk, ATTN_TILE, HS, 1.f);
    attn_load_tile(Vs, HS + 1, v_bh + (long)s0 * a.kv_stride, a.kv_stride, nk, ATTN_TILE, HS, 1.f);
    __syncthreads();

    /* this lane's key s0 + lane: score and dout.v against the warp's rows */
    float sc[R], dp[R];
#pragma unroll
    for (int r = 0; r < R; r++) sc[r] = dp[r] = 0.f;
    const float *k_row = Ks + lane * (HS + 1), *v_row = Vs + lane * (HS + 1);
    for (int d = 0; d < HS; d++) {
      const float kd = k_row[d], vd = v_row[d];
#pragma unroll
      for (int r = 0; r < R; r++) {
        sc[r] += Qs[(warp * R + r) * HS + d] * kd;
        dp[r] += dOs[(warp * R + r) * HS + d] * vd;
      }
    }
    float ds[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float p = s0 + lane < key_end[r] ? expf(sc[r] - row_lse[r]) : 0.f;
      ds[r] = p * (dp[r] - row_delta[r]);
    }

    /* acc += dS k: lane owns dims lane + 32 i; dS of key j comes from lane j */
    for (int j = 0; j < ATTN_TILE; j++) {
      float kj[ATTN_LANE_DIMS];
#pragma unroll
      for (int i = 0; i < ATTN_LANE_DIMS; i++) {
        const int d = lane + 32 * i;
        kj[i] = d < HS ? Ks[j * (HS + 1) + d] : 0.f;
      }
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float dsj = __shfl_sync(PIPEC_FULL_MASK, ds[r], j);
#pragma unroll
        for (int i = 0; i < ATTN_LANE_DIMS; i++) acc[r][i] += dsj * kj[i];
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; r++) {
    const int t = t0 + warp * R + r;
    if (t >= a.T) continue;
    T *dq_row = dq + ((long)b * a.T + t) * a.q_stride + (long)h * HS;
#pragma unroll
    for (int i = 0; i < ATTN_LANE_DIMS; i++) {
      const int d = lane + 32 * i;
      if (d < HS) dq_row[d] = from_float<T>(acc[r][i] * scale);
    }
  }
}

/* dk = sum over queries (of every head in the kv head's group) of dS q /
 * sqrt(HS), dv = sum of P dout. One block per 8 keys of one kv head; query
 * tiles before the first query that sees these keys are skipped. */
template <typename T>
__device__ void attention_backward_dkdv(T *dk, T *dv, const T *dout, const float *lse, const float *delta, const T *q,
                                        const T *k, const T *v, PipecAttn a) {
  extern __shared__ float attn_smem[];
  constexpr int R = ATTN_BWD_ROWS, BK = ATTN_WARPS * ATTN_BWD_ROWS;
  attn_check(a);
  const int HS = a.HS, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int b = blockIdx.z, hk = blockIdx.y, s0 = blockIdx.x * BK;
  const int group = a.NH / a.NH_kv;
  const float scale = 1.f / sqrtf((float)HS);
  float *Ks = attn_smem;                  /* [BK][HS] */
  float *Vs = Ks + BK * HS;               /* [BK][HS] */
  float *Qs = Vs + BK * HS;               /* [ATTN_TILE][HS + 1] q / sqrt(HS) */
  float *dOs = Qs + ATTN_TILE * (HS + 1); /* [ATTN_TILE][HS + 1] */
  float *Ls = dOs + ATTN_TILE * (HS + 1); /* [ATTN_TILE] lse */
  float *Ds = Ls + ATTN_TILE;             /* [ATTN_TILE] delta */
  const long kv_off = (long)b * a.Tk * a.kv_stride + (long)hk * HS;
  const int nk = min(BK, a.Tk - s0);
  attn_load_tile(Ks, HS, k + kv_off + (long)s0 * a.kv_stride, a.kv_stride, nk, BK, HS, 1.f);
  attn_load_tile(Vs, HS, v + kv_off + (long)s0 * a.kv_stride, a.kv_stride, nk, BK, HS, 1.f);

  float dk_acc[R][ATTN_LANE_DIMS], dv_acc[R][ATTN_LANE_DIMS];
#pragma unroll
  for (int r = 0; r < R; r++) {
#pragma unroll
    for (int i = 0; i < ATTN_LANE_DIMS; i++) dk_acc[r][i] = dv_acc[r][i] = 0.f;
  }
  /* causal: query t sees key s iff t >= s - (Tk - T) */
  int t_begin = a.causal ? max(0, s0 - (a.Tk - a.T)) : 0;
  t_begin -= t_begin % ATTN_TILE;

  for (int h = hk * group; h < (hk + 1) * group; h++) {
    const T *q_bh = q + (long)b * a.T * a.q_stride + (long)h * HS;
    const T *do_bh = dout + (long)b * a.T * a.out_stride + (long)h * HS;
    const long stat_off = ((long)b * a.NH + h) * a.T;
    for (int t0 = t_begin; t0 < a.T; t0 += ATTN_TILE) {
      __syncthreads(); /* the previous query tile is used up (and Ks, Vs are loaded) */
      const int nq = min(ATTN_TILE, a.T - t0);
      attn_load_tile(Qs, HS + 1, q_bh + (long)t0 * a.q_stride, a.q_stride, nq, ATTN_TILE, HS, scale);
      attn_load_tile(dOs, HS + 1, do_bh + (long)t0 * a.out_stride, a.out_stride, nq, ATTN_TILE, HS, 1.f);
      if (threadIdx.x < ATTN_TILE) {
        const int t = t0 + threadIdx.x;
        Ls[threadIdx.x] = t < a.T ? lse[stat_off + t] : 0.f;
        Ds[threadIdx.x] = t < a.T ? delta[stat_off + t] : 0.f;
      }
      __syncthreads();

      /* this lane's query t0 + lane against the warp's keys */
      const int t = t0 + lane;
      const int key_end = t < a.T ? attn_key_end(a, t) : 0;
      float sc[R], dp[R];
#pragma unroll
      for (int r = 0; r < R; r++) sc[r] = dp[r] = 0.f;
      const float *q_row = Qs + lane * (HS + 1), *do_row = dOs + lane * (HS + 1);
      for (int d = 0; d < HS; d++) {
        const float qd = q_row[d], dod = do_row[d];
#pragma unroll
        for (int r = 0; r < R; r++) {
          sc[r] += qd * Ks[(warp * R + r) * HS + d];
          dp[r] += dod * Vs[(warp * R + r) * HS + d];
        }
      }
      float p[R], ds[R];
#pragma unroll
      for (int r = 0; r < R; r++) {
        const int s = s0 + warp * R + r;
        p[r] = s < key_end ? expf(sc[r] - Ls[lane]) : 0.f;
        ds[r] = p[r] * (dp[r] - Ds[lane]);
      }

      /* dv += p dout, dk += dS q: lane owns dims lane + 32 i; query j's
       * p and dS come from lane j */
      for (int j = 0; j < ATTN_TILE; j++) {
        float qj[ATTN_LANE_DIMS], doj[ATTN_LANE_DIMS];
#pragma unroll
        for (int i = 0; i < ATTN_LANE_DIMS; i++) {
          const int d = lane + 32 * i;
          qj[i] = d < HS ? Qs[j * (HS + 1) + d] : 0.f;
          doj[i] = d < HS ? dOs[j * (HS + 1) + d] : 0.f;
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
          const float pj = __shfl_sync(PIPEC_FULL_MASK, p[r], j);
          const float dsj = __shfl_sync(PIPEC_FULL_MASK, ds[r], j);
#pragma unroll
          for (int i = 0; i < ATTN_LANE_DIMS; i++) {
            dv_acc[r][i] += pj * doj[i];
            dk_acc[r][i] += dsj * qj[i];
          }
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; r++) {
    const int s = s0 + warp * R + r;
    if (s >= a.Tk) continue;
    T *dk_row = dk + kv_off + (long)s * a.kv_stride;
    T *dv_row = dv + kv_off + (long)s * a.kv_stride;
#pragma unroll
    for (int i = 0; i < ATTN_LANE_DIMS; i++) {
      const int d = lane + 32 * i;
      if (d < HS) {
        dk_row[d] = from_float<T>(dk_acc[r][i]); /* Qs already carries the 1/sqrt(HS) */
        dv_row[d] = from_float<T>(dv_acc[r][i]);
      }
    }
  }
}

#define PIPEC_ATTENTION_ENTRIES(T, SFX)                                                                                \
  extern "C" __global__ void __launch_bounds__(128, 4)                                                                 \
      pipec_attention_forward_##SFX(T *out, float *lse, const T *q, const T *k, const T *v, PipecAttn a) {             \
    attention_forward<T>(out, lse, q, k, v, a);                                                                        \
  }                                                                                                                    \
  extern "C" __global__ void __launch_bounds__(128, 4)                                                                 \
      pipec_attention_backward_dq_##SFX(T *dq, float *delta, const T *dout, const T *out, const float *lse,            \
                                        const T *q, const T *k, const T *v, PipecAttn a) {                             \
    attention_backward_dq<T>(dq, delta, dout, out, lse, q, k, v, a);                                                   \
  }                                                                                                                    \
  extern "C" __global__ void __launch_bounds__(128, 4)                                                                 \
      pipec_attention_backward_dkdv_##SFX(T *dk, T *dv, const T *dout, const float *lse, const float *delta,           \
                                          const T *q, const T *k, const T *v, PipecAttn a) {                           \
    attention_backward_dkdv<T>(dk, dv, dout, lse, delta, q, k, v, a);                                                  \
  }

#endif /* PIPEC_ATTENTION_CUH */
