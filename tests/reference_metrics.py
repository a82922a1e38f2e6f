"""Slow, independent reference implementations of every metric in lsl_core.metrics.

Plain Python: nested lists of floats (float64), explicit loops, no torch/numpy/scipy, written from
the formulas in DESIGN §3 and the papers rather than from the fast code. Conventions match the
fast versions where the formulas leave a case open: cosine with a zero vector = 0, path ties go
to the lowest frame index, Spearman with < 2 tokens or a constant path = 0, CKA with a constant
side = 0. Inputs: hs [L+1][Ts][d], ht [L+1][Tt][d] as lists (`tensor.double().tolist()`).
"""

from __future__ import annotations

import math
from itertools import permutations

Vec = list[float]
Mat = list[list[float]]


# ---- vectors ---------------------------------------------------------------------------------

def dot(x: Vec, y: Vec) -> float:
    total = 0.0
    for a, b in zip(x, y, strict=True):
        total += a * b
    return total


def norm(x: Vec) -> float:
    return math.sqrt(dot(x, x))


def cosine(x: Vec, y: Vec) -> float:
    nx, ny = norm(x), norm(y)
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return dot(x, y) / (nx * ny)


def distance(x: Vec, y: Vec) -> float:
    total = 0.0
    for a, b in zip(x, y, strict=True):
        total += (a - b) ** 2
    return math.sqrt(total)


def mean_rows(rows: Mat) -> Vec:
    out = [0.0] * len(rows[0])
    for row in rows:
        for k, v in enumerate(row):
            out[k] += v
    return [v / len(rows) for v in out]


def mean(values: Vec) -> float:
    return math.fsum(values) / len(values)


# ---- sequence level --------------------------------------------------------------------------

def ref_mean_pool(h: list[Mat]) -> Mat:
    return [mean_rows(layer) for layer in h]


def ref_sequence_curve(hs: list[Mat], ht: list[Mat], f) -> Vec:
    return [f(mean_rows(hs[l]), mean_rows(ht[l])) for l in range(len(hs))]


def ref_layer_average(curve: Vec) -> float:
    return curve[0] if len(curve) == 1 else mean(curve[1:])


def ref_mean_norm(h: list[Mat]) -> Vec:
    return [mean([norm(row) for row in layer]) for layer in h]


def ref_standardized_distance(hs: list[Mat], ht: list[Mat]) -> Vec:
    """Per layer: z-score every dimension over the union of both spans (population std), then the L2
    distance of the two spans' mean z vectors divided by sqrt(d); constant dimensions give 0."""
    out = []
    for l in range(len(hs)):
        rows = hs[l] + ht[l]
        d = len(rows[0])
        mu = mean_rows(rows)
        z_s, z_t = [], []
        for k in range(d):
            sd = math.sqrt(mean([(r[k] - mu[k]) ** 2 for r in rows]))
            if sd == 0.0:
                z_s.append(0.0)
                z_t.append(0.0)
                continue
            z_s.append(mean([(r[k] - mu[k]) / sd for r in hs[l]]))
            z_t.append(mean([(r[k] - mu[k]) / sd for r in ht[l]]))
        out.append(distance(z_s, z_t) / math.sqrt(d))
    return out


# ---- token level -----------------------------------------------------------------------------

def ref_token_matrix(hs: list[Mat], ht: list[Mat], f) -> list[Mat]:
    out = []
    for l in range(len(hs)):
        out.append([[f(hs[l][i], ht[l][j]) for j in range(len(ht[l]))] for i in range(len(hs[l]))])
    return out


def ref_path(A: list[Mat], metric: str) -> list[list[int]]:
    """First frame reaching the best value in each column (strict comparison keeps the first)."""
    paths = []
    for layer in A:
        ts, tt = len(layer), len(layer[0])
        row = []
        for j in range(tt):
            best_i = 0
            for i in range(1, ts):
                better = layer[i][j] > layer[best_i][j] if metric == "cosine" else layer[i][j] < layer[best_i][j]
                if better:
                    best_i = i
            row.append(best_i)
        paths.append(row)
    return paths


def ref_dtw(layer: Mat, metric: str) -> tuple[list[int], list[int], float, int]:
    """Textbook DTW on one layer's matrix [Ts][Tt], row by row with explicit loops.

    Cost c = 1 - A (cosine) or A (distance); D[i][j] = c[i][j] + min over the predecessors
    (i-1, j-1), (i-1, j), (i, j-1), preferring them in that order when equal. The path is
    recovered by walking the stored predecessors back from (Ts-1, Tt-1), and collected as a
    list of cells; then each token takes the visited frame with the best value (lowest frame on
    ties) and each frame its visited token with the best value (lowest token on ties).
    Returns (frame per token [Tt], token per frame [Ts], total cost, number of cells).
    """
    ts, tt = len(layer), len(layer[0])
    c = [[(1.0 - layer[i][j]) if metric == "cosine" else layer[i][j] for j in range(tt)] for i in range(ts)]
    D = [[math.inf] * tt for _ in range(ts)]
    prev: list[list[tuple[int, int] | None]] = [[None] * tt for _ in range(ts)]
    for i in range(ts):
        for j in range(tt):
            if i == 0 and j == 0:
                D[i][j] = c[i][j]
                continue
            options = []
            if i > 0 and j > 0:
                options.append((D[i - 1][j - 1], (i - 1, j - 1)))
            if i > 0:
                options.append((D[i - 1][j], (i - 1, j)))
            if j > 0:
                options.append((D[i][j - 1], (i, j - 1)))
            best_value, best_cell = options[0]
            for value, cell in options[1:]:
                if value < best_value:  # strict: an equal later option never replaces an earlier one
                    best_value, best_cell = value, cell
            D[i][j] = c[i][j] + best_value
            prev[i][j] = best_cell
    cells = [(ts - 1, tt - 1)]
    while cells[-1] != (0, 0):
        cells.append(prev[cells[-1][0]][cells[-1][1]])
    cells.reverse()

    def better(a: float, b: float) -> bool:
        return a > b if metric == "cosine" else a < b

    per_token: list[int | None] = [None] * tt
    per_frame: list[int | None] = [None] * ts
    for i, j in cells:  # ascending i and j, so a strict comparison keeps the lowest index on ties
        if per_token[j] is None or better(layer[i][j], layer[per_token[j]][j]):
            per_token[j] = i
        if per_frame[i] is None or better(layer[i][j], layer[i][per_frame[i]]):
            per_frame[i] = j
    return per_token, per_frame, D[ts - 1][tt - 1], len(cells)


def ref_dtw_path(A: list[Mat], metric: str) -> list[list[int]]:
    return [ref_dtw(layer, metric)[0] for layer in A]


def ref_path_scores(A: list[Mat], path: list[list[int]]) -> Mat:
    return [[A[l][path[l][j]][j] for j in range(len(path[l]))] for l in range(len(A))]


def average_ranks(values: Vec) -> Vec:
    """1-based ranks; tied values share the mean of the ranks they occupy (O(n^2) counting)."""
    ranks = []
    for v in values:
        below = sum(1 for w in values if w < v)
        equal = sum(1 for w in values if w == v)
        ranks.append(below + (equal + 1) / 2.0)
    return ranks


def pearson(x: Vec, y: Vec) -> float:
    mx, my = mean(x), mean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def ref_spearman(path_row: list[int]) -> float:
    if len(path_row) < 2:
        return 0.0
    return pearson(average_ranks([float(j) for j in range(len(path_row))]), average_ranks([float(i) for i in path_row]))


def ref_consistency(path_a: list[list[int]], path_b: list[list[int]]) -> Vec:
    out = []
    for ra, rb in zip(path_a, path_b, strict=True):
        out.append(sum(1 for a, b in zip(ra, rb, strict=True) if a == b) / len(ra))
    return out


def ref_aps(scores: Mat) -> float:
    """1/(L*Tt) sum_{l=1..L} sum_j; layer 0 alone when there is no other layer."""
    layers = scores if len(scores) == 1 else scores[1:]
    total, count = 0.0, 0
    for row in layers:
        for v in row:
            total += v
            count += 1
    return total / count


def ref_bottom_k(scores: Vec, k: int, metric: str) -> list[int]:
    quality = [(s if metric == "cosine" else -s, j) for j, s in enumerate(scores)]
    return [j for _, j in sorted(quality)[:k]]


# ---- CKA ------------------------------------------------------------------------------------

def centred(X: Mat) -> Mat:
    mu = mean_rows(X)
    return [[v - m for v, m in zip(row, mu, strict=True)] for row in X]


def gram(X: Mat) -> Mat:
    return [[dot(a, b) for b in X] for a in X]


def ref_hsic_biased(K: Mat, L: Mat) -> float:
    """tr(K H L H)/(n-1)^2 written as the double-centred Gram inner product."""
    n = len(K)

    def double_centre(M: Mat) -> Mat:
        row = [mean(r) for r in M]
        col = [mean([M[i][j] for i in range(n)]) for j in range(n)]
        tot = mean(row)
        return [[M[i][j] - row[i] - col[j] + tot for j in range(n)] for i in range(n)]

    Kc, Lc = double_centre(K), double_centre(L)
    return sum(Kc[i][j] * Lc[i][j] for i in range(n) for j in range(n)) / (n - 1) ** 2


def is_constant(X: Mat) -> bool:
    return all(row == X[0] for row in X)


def ref_linear_cka(X: Mat, Y: Mat) -> float:
    if is_constant(X) or is_constant(Y):
        return 0.0
    K, L = gram(centred(X)), gram(centred(Y))
    return ref_hsic_biased(K, L) / math.sqrt(ref_hsic_biased(K, K) * ref_hsic_biased(L, L))


def ref_cross_layer_cka(hs: list[Mat], ht: list[Mat], path: list[int]) -> Mat:
    n_layers = len(hs)
    return [[ref_linear_cka([hs[a][i] for i in path], ht[b]) for b in range(n_layers)] for a in range(n_layers)]


def ref_unbiased_hsic(K: Mat, L: Mat) -> float:
    """Song et al. (2012) HSIC_1 as its U-statistic: average over ordered distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq. O(n^4): keep n <= 9."""
    n = len(K)
    total, count = 0.0, 0
    for i, j, q, r in permutations(range(n), 4):
        total += K[i][j] * L[i][j] + K[i][j] * L[q][r] - 2.0 * K[i][j] * L[i][q]
        count += 1
    return total / count


def ref_minibatch_cka(batches: list[tuple[list[Mat], list[Mat]]]) -> Mat:
    """Nguyen et al. (2021): ratio of batch-averaged unbiased HSICs with linear (uncentred) Grams."""
    n_layers = len(batches[0][0])
    xy = [[0.0] * n_layers for _ in range(n_layers)]
    xx, yy = [0.0] * n_layers, [0.0] * n_layers
    for xs, yt in batches:
        Ks = [gram(xs[a]) for a in range(n_layers)]
        Ls = [gram(yt[b]) for b in range(n_layers)]
        for a in range(n_layers):
            xx[a] += ref_unbiased_hsic(Ks[a], Ks[a]) / len(batches)
            yy[a] += ref_unbiased_hsic(Ls[a], Ls[a]) / len(batches)
            for b in range(n_layers):
                xy[a][b] += ref_unbiased_hsic(Ks[a], Ls[b]) / len(batches)
    return [[xy[a][b] / math.sqrt(xx[a] * yy[b]) for b in range(n_layers)] for a in range(n_layers)]


# ---- GAP fit --------------------------------------------------------------------------------

def ref_ols(x: Vec, y: Vec) -> tuple[float, float, float]:
    """slope, intercept, R² from the normal equations of y = a x + b (Cramer's rule)."""
    n = len(x)
    sx, sy = sum(x), sum(y)
    sxx = sum(v * v for v in x)
    sxy = sum(a * b for a, b in zip(x, y, strict=True))
    det = n * sxx - sx * sx
    slope = (n * sxy - sx * sy) / det
    intercept = (sxx * sy - sx * sxy) / det
    my = sy / n
    ss_res = sum((b - (slope * a + intercept)) ** 2 for a, b in zip(x, y, strict=True))
    ss_tot = sum((b - my) ** 2 for b in y)
    return slope, intercept, (0.0 if ss_tot == 0.0 else 1.0 - ss_res / ss_tot)
