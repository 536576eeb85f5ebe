"""Numba implementation of the scan-level kernel (see :mod:`.scan_kernel`); imported on first use.

Module-level functions so numba can cache their machine code on disk (``cache=True``): the
first fit in a new environment compiles them once (~15 s). ``error_model="numpy"``: a wild
sampler proposal (an sd overflowing to inf) yields a NaN log-density, which NUTS rejects, not
an exception.
"""

import numba
import numpy as np

# Every per-pair quantity carries the pairs as its last axis, and the innermost loops run
# over pairs, so numba vectorises them; small matrices are (n, n, P).


@numba.njit(cache=True, error_model="numpy")
def chol(A, n, L, logdet):
    """Lower Cholesky factors L of small SPD matrices (n, n, P); logdet[p] = log|A|."""
    P = A.shape[2]
    logdet[:] = 0.0
    for i in range(n):
        for j in range(i + 1):
            for p in range(P):
                L[i, j, p] = A[i, j, p]
            for k in range(j):
                for p in range(P):
                    L[i, j, p] -= L[i, k, p] * L[j, k, p]
            if i == j:
                for p in range(P):
                    L[i, i, p] = np.sqrt(L[i, i, p])
                    logdet[p] += 2.0 * np.log(L[i, i, p])
            else:
                for p in range(P):
                    L[i, j, p] /= L[j, j, p]

@numba.njit(cache=True, error_model="numpy")
def inv_spd(A, n, out, L, Li, logdet):
    """out = A^-1 for small SPD matrices (n, n, P) by Cholesky; logdet[p] = log|A|."""
    P = A.shape[2]
    if n == 1:
        for p in range(P):
            out[0, 0, p] = 1.0 / A[0, 0, p]
            logdet[p] = np.log(A[0, 0, p])
        return
    chol(A, n, L, logdet)
    for i in range(n):  # Li: inverse of L (lower triangular)
        for p in range(P):
            Li[i, i, p] = 1.0 / L[i, i, p]
        for j in range(i):
            for p in range(P):
                Li[i, j, p] = 0.0
            for k in range(j, i):
                for p in range(P):
                    Li[i, j, p] -= L[i, k, p] * Li[k, j, p]
            for p in range(P):
                Li[i, j, p] /= L[i, i, p]
    for i in range(n):
        for j in range(n):
            for p in range(P):
                out[i, j, p] = 0.0
            for k in range(max(i, j), n):
                for p in range(P):
                    out[i, j, p] += Li[k, i, p] * Li[k, j, p]

@numba.njit(cache=True, error_model="numpy")
def pass_up(H, g, t, n, M, Pi, pi, scratch, const):
    """Message to the parent: M = (I + tH)^-1, Pi = M H, pi = M g; const += log-constant."""
    P = H.shape[2]
    A = scratch[0]
    logdet = scratch[3, 0, 0]
    for i in range(n):
        for j in range(n):
            for p in range(P):
                A[i, j, p] = t[p] * H[i, j, p] + (1.0 if i == j else 0.0)
    inv_spd(A, n, M, scratch[1], scratch[2], logdet)
    for p in range(P):
        const[p] -= 0.5 * logdet[p]
    for i in range(n):
        for p in range(P):
            pi[i, p] = 0.0
        for j in range(n):
            for p in range(P):
                pi[i, p] += M[i, j, p] * g[j, p]
        for p in range(P):
            const[p] += 0.5 * t[p] * g[i, p] * pi[i, p]
        for j in range(n):
            for p in range(P):
                Pi[i, j, p] = 0.0
            for k in range(n):
                for p in range(P):
                    Pi[i, j, p] += M[i, k, p] * H[k, j, p]

@numba.njit(cache=True, error_model="numpy")
def pass_down(H, g, t, n, M, Pi, pi, Pibar, pibar, Hbar, gbar, tbar, scratch):
    """Adjoints of H, g (written) and t (added to tbar) from those of Pi, pi and of the
    log-constant (1)."""
    P = H.shape[2]
    Abar = scratch[0]
    T = scratch[1]
    mp = scratch[3, 0, 0]
    for k in range(n):  # T = Pibar Pi
        for j in range(n):
            for p in range(P):
                T[k, j, p] = 0.0
            for l in range(n):
                for p in range(P):
                    T[k, j, p] += Pibar[k, l, p] * Pi[l, j, p]
    for i in range(n):
        for p in range(P):
            mp[p] = 0.0  # (M pibar)[i]
        for k in range(n):
            for p in range(P):
                mp[p] += M[i, k, p] * pibar[k, p]
        for p in range(P):
            gbar[i, p] = mp[p] + t[p] * pi[i, p]
            tbar[p] += 0.5 * g[i, p] * pi[i, p]
        for j in range(n):
            for p in range(P):
                Abar[i, j, p] = -0.5 * M[i, j, p] - 0.5 * t[p] * pi[i, p] * pi[j, p] - mp[p] * pi[j, p]
            for k in range(n):
                for p in range(P):
                    Abar[i, j, p] -= M[i, k, p] * T[k, j, p]
    for i in range(n):
        for j in range(n):
            for p in range(P):
                tbar[p] += Abar[i, j, p] * H[i, j, p]
                Hbar[i, j, p] = t[p] * Abar[i, j, p]
            for k in range(n):
                for p in range(P):
                    Hbar[i, j, p] += M[i, k, p] * Pibar[k, j, p]

@numba.njit(cache=True, error_model="numpy")
def workspace(sxx, n_drugs, P):
    n_ds, n_comp, R, _ = sxx.shape
    m_max = R - 1
    D = n_drugs
    nmax = max(m_max, D)
    return (np.empty((n_ds, P)), np.empty((n_ds, P)), np.empty((n_ds, n_comp, P)),
            np.empty((n_ds, n_comp, R, P)), np.empty((n_ds, n_comp, P)), np.empty((n_ds, R, R, P)),
            np.empty((n_ds, R, P)), np.empty((n_ds, m_max, m_max, P)), np.empty((n_ds, m_max, P)),
            np.empty((n_ds, m_max, m_max, P)), np.empty((n_ds, m_max, m_max, P)), np.empty((n_ds, m_max, P)),
            np.empty((D, D, P)), np.empty((D, P)), np.empty((D, D, P)), np.empty((D, D, P)), np.empty((D, P)),
            np.empty(P), np.empty(P), np.empty((4, nmax, nmax, P)), np.empty(P))

@numba.njit(cache=True, error_model="numpy")
def forward(sigma, omega, b, td2, tk2, lam_d, lam_u,
            sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects, m_units, units, unit_drug, n_drugs, ws):
    """Every message up the tree; ws[-1] (const) gets each pair's log-constant so far,
    ws[17], ws[18] the message (precision, score) on the overall effect."""
    s2, o2, lam, sxy_a, syy_a, F, h, Hk, gk, Mk, Pik, pik, Lam, ell, Md, Pib, pib, hmu, gmu, scratch, const = ws
    n_ds, n_comp, R, _ = sxx.shape
    Q = sxw.shape[3]
    P = sigma.shape[1]
    D = n_drugs
    const[:] = 0.0
    Lam[:] = 0.0
    ell[:] = 0.0
    # ---- forward: each dataset's message on its units, then on the drug effects
    for k in range(n_ds):
        m = m_units[k]
        r = m + 1
        within_df = 0.0  # scans minus subjects: the within-subject part of log|Sigma| is df log s2
        for c in range(1, n_comp):
            within_df += n_subjects[k, c - 1] * (sizes[c - 1] - 1.0)
        for p in range(P):
            s2[k, p] = sigma[k, p] * sigma[k, p]
            o2[k, p] = omega[k, p] * omega[k, p]
            lam[k, 0, p] = 1.0 / s2[k, p]
            const[p] -= within_df * np.log(sigma[k, p])
        for c in range(1, n_comp):
            n = sizes[c - 1]
            nj = n_subjects[k, c - 1]
            for p in range(P):
                v = s2[k, p] + n * o2[k, p]
                lam[k, c, p] = 1.0 / v
                const[p] -= 0.5 * nj * np.log(v)
        F[k] = 0.0
        h[k] = 0.0
        for c in range(n_comp):
            for p in range(P):
                syy_a[k, c, p] = syy[k, c, p]
            for a in range(Q):
                for p in range(P):
                    syy_a[k, c, p] -= 2.0 * swy[k, c, a, p] * b[a, p]
                for a2 in range(Q):
                    w = sww[k, c, a, a2]
                    for p in range(P):
                        syy_a[k, c, p] += b[a, p] * w * b[a2, p]
            for p in range(P):
                const[p] -= 0.5 * lam[k, c, p] * syy_a[k, c, p]
            for i in range(r):
                for p in range(P):
                    sxy_a[k, c, i, p] = sxy[k, c, i, p]
                for a in range(Q):
                    w = sxw[k, c, i, a]
                    for p in range(P):
                        sxy_a[k, c, i, p] -= w * b[a, p]
                for p in range(P):
                    h[k, i, p] += lam[k, c, p] * sxy_a[k, c, i, p]
                for j in range(r):
                    w = sxx[k, c, i, j]
                    for p in range(P):
                        F[k, i, j, p] += lam[k, c, p] * w
        for p in range(P):
            faa = F[k, 0, 0, p]
            const[p] -= 0.5 * (np.log(faa) - h[k, 0, p] * h[k, 0, p] / faa)
        for i in range(m):
            for p in range(P):
                gk[k, i, p] = h[k, i + 1, p] - F[k, i + 1, 0, p] * h[k, 0, p] / F[k, 0, 0, p]
            for j in range(m):
                for p in range(P):
                    Hk[k, i, j, p] = F[k, i + 1, j + 1, p] - F[k, i + 1, 0, p] * F[k, j + 1, 0, p] / F[k, 0, 0, p]
        pass_up(Hk[k], gk[k], tk2, m, Mk[k], Pik[k], pik[k], scratch, const)
        # unit u's effect is centred on lam_u[u] x its drug's effect: its message on the drug
        # effects is seen through that loading
        for i in range(m):
            di = unit_drug[units[k, i]]
            li = lam_u[units[k, i]]
            for p in range(P):
                ell[di, p] += li * pik[k, i, p]
            for j in range(m):
                dj = unit_drug[units[k, j]]
                w = li * lam_u[units[k, j]]
                for p in range(P):
                    Lam[di, dj, p] += w * Pik[k, i, j, p]
    pass_up(Lam, ell, td2, D, Md, Pib, pib, scratch, const)
    # drug d's effect is centred on lam[d] x the overall effect: the message on the overall
    # effect is the drugs' message seen through those loadings
    hmu[:] = 0.0
    gmu[:] = 0.0
    for i in range(D):
        for p in range(P):
            gmu[p] += lam_d[i] * pib[i, p]
        for j in range(D):
            w = lam_d[i] * lam_d[j]
            for p in range(P):
                hmu[p] += w * Pib[i, j, p]

@numba.njit(cache=True, error_model="numpy")
def kernel(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam_d, lam_u,
           sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects, m_units, units, unit_drug, n_drugs,
           g_sigma, g_omega, g_b, g_tau_d, g_tau_k, g_prior_mean, g_prior_sd, g_lam_d, g_lam_u):
    """The log-likelihood summed over pairs; gradients written into g_*.

    Each pair's overall effect has a Normal(prior_mean[p], prior_sd[p]) prior; drug d's
    effects are centred on lam_d[d] times it (all ones: on the overall effect itself), and unit
    u's on lam_u[u] times its drug's."""
    n_ds, n_comp, R, _ = sxx.shape
    Q = sxw.shape[3]
    P = sigma.shape[1]
    m_max = R - 1
    D = n_drugs
    td2 = tau_d * tau_d
    tk2 = tau_k * tau_k
    ws = workspace(sxx, n_drugs, P)
    forward(sigma, omega, b, td2, tk2, lam_d, lam_u, sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects, m_units,
            units, unit_drug, n_drugs, ws)
    s2, o2, lam, sxy_a, syy_a, F, h, Hk, gk, Mk, Pik, pik, Lam, ell, Md, Pib, pib, hmu, gmu, scratch, const = ws
    Pibbar = np.empty((D, D, P))
    pibbar = np.empty((D, P))
    total = 0.0
    for p in range(P):
        # the overall effect against its prior: -log(A)/2 + (v g^2/2 - h m^2/2 + g m) / A, A = 1 + v h
        v = prior_sd[p] * prior_sd[p]
        m = prior_mean[p]
        amu = 1.0 + v * hmu[p]
        num = 0.5 * v * gmu[p] * gmu[p] - 0.5 * hmu[p] * m * m + gmu[p] * m
        total += const[p] - 0.5 * np.log(amu) + num / amu
        hbar_mu = -0.5 * v / amu - 0.5 * m * m / amu - num * v / (amu * amu)
        gbar_mu = (v * gmu[p] + m) / amu
        g_prior_mean[p] = (gmu[p] - hmu[p] * m) / amu
        g_prior_sd[p] = 2.0 * prior_sd[p] * (-0.5 * hmu[p] / amu + 0.5 * gmu[p] * gmu[p] / amu - num * hmu[p] / (amu * amu))
        for i in range(D):
            pibbar[i, p] = gbar_mu * lam_d[i]
            g_lam_d[i] += gbar_mu * pib[i, p]
            for j in range(D):
                Pibbar[i, j, p] = hbar_mu * lam_d[i] * lam_d[j]
                g_lam_d[i] += 2.0 * hbar_mu * Pib[i, j, p] * lam_d[j]  # Pib is symmetric
    # ---- backward
    Lambar = np.empty((D, D, P))
    ellbar = np.empty((D, P))
    tbar = np.zeros(P)
    pass_down(Lam, ell, td2, D, Md, Pib, pib, Pibbar, pibbar, Lambar, ellbar, tbar, scratch)
    for p in range(P):
        g_tau_d[p] = 2.0 * tau_d[p] * tbar[p]
        tbar[p] = 0.0
    Hbar = np.empty((m_max, m_max, P))
    gbar = np.empty((m_max, P))
    Pikbar = np.empty((m_max, m_max, P))
    pikbar = np.empty((m_max, P))
    Fbar = np.empty((R, R, P))
    hbar = np.empty((R, P))
    lambar = np.empty(P)
    s2bar = np.empty(P)
    o2bar = np.empty(P)
    for k in range(n_ds):
        m = m_units[k]
        r = m + 1
        for i in range(m):
            di = unit_drug[units[k, i]]
            ui = units[k, i]
            li = lam_u[ui]
            for p in range(P):
                pikbar[i, p] = li * ellbar[di, p]
                g_lam_u[ui] += ellbar[di, p] * pik[k, i, p]
            for j in range(m):
                dj = unit_drug[units[k, j]]
                lj = lam_u[units[k, j]]
                for p in range(P):
                    Pikbar[i, j, p] = li * lj * Lambar[di, dj, p]
                    g_lam_u[ui] += (Lambar[di, dj, p] + Lambar[dj, di, p]) * Pik[k, i, j, p] * lj
        pass_down(Hk[k], gk[k], tk2, m, Mk[k], Pik[k], pik[k], Pikbar, pikbar, Hbar, gbar, tbar, scratch)
        # adjoints of F (only the entries used), h and q; the constant's adjoint is 1
        Fbar[:] = 0.0
        hbar[:] = 0.0
        for p in range(P):
            faa = F[k, 0, 0, p]
            hbar[0, p] = h[k, 0, p] / faa
            Fbar[0, 0, p] = -0.5 * (1.0 / faa + h[k, 0, p] * h[k, 0, p] / (faa * faa))
        for i in range(m):
            for p in range(P):
                faa = F[k, 0, 0, p]
                fi = F[k, i + 1, 0, p]
                hbar[i + 1, p] += gbar[i, p]
                Fbar[i + 1, 0, p] -= gbar[i, p] * h[k, 0, p] / faa
                hbar[0, p] -= gbar[i, p] * fi / faa
                Fbar[0, 0, p] += gbar[i, p] * fi * h[k, 0, p] / (faa * faa)
            for j in range(m):
                for p in range(P):
                    faa = F[k, 0, 0, p]
                    fi = F[k, i + 1, 0, p]
                    fj = F[k, j + 1, 0, p]
                    hb = Hbar[i, j, p]
                    Fbar[i + 1, j + 1, p] += hb
                    Fbar[i + 1, 0, p] -= hb * fj / faa
                    Fbar[j + 1, 0, p] -= hb * fi / faa
                    Fbar[0, 0, p] += hb * fi * fj / (faa * faa)
        s2bar[:] = 0.0
        o2bar[:] = 0.0
        for c in range(n_comp):
            for p in range(P):
                lambar[p] = -0.5 * syy_a[k, c, p]
            for i in range(r):
                for p in range(P):
                    lambar[p] += hbar[i, p] * sxy_a[k, c, i, p]
                for j in range(r):
                    w = sxx[k, c, i, j]
                    for p in range(P):
                        lambar[p] += Fbar[i, j, p] * w
            for a in range(Q):
                for p in range(P):
                    g_b[a, p] += lam[k, c, p] * swy[k, c, a, p]
                for a2 in range(Q):
                    w = sww[k, c, a, a2]
                    for p in range(P):
                        g_b[a, p] -= lam[k, c, p] * w * b[a2, p]
                for i in range(r):
                    w = sxw[k, c, i, a]
                    for p in range(P):
                        g_b[a, p] -= hbar[i, p] * lam[k, c, p] * w
            if c == 0:
                for p in range(P):
                    s2bar[p] -= lambar[p] * lam[k, 0, p] * lam[k, 0, p]
            else:
                n = sizes[c - 1]
                nj = n_subjects[k, c - 1]
                for p in range(P):
                    l2 = lam[k, c, p] * lam[k, c, p]
                    s2bar[p] -= lambar[p] * l2 + 0.5 * nj * ((n - 1.0) / s2[k, p] + lam[k, c, p])
                    o2bar[p] -= lambar[p] * l2 * n + 0.5 * nj * n * lam[k, c, p]
        for p in range(P):
            g_sigma[k, p] = 2.0 * sigma[k, p] * s2bar[p]
            g_omega[k, p] = 2.0 * omega[k, p] * o2bar[p]
    for p in range(P):
        g_tau_k[p] = 2.0 * tau_k[p] * tbar[p]
    return total

@numba.njit(cache=True, error_model="numpy")
def draws(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam_d, lam_u,
          sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects, m_units, units, unit_drug, n_drugs,
          xi_mu, xi_beta, xi_theta, mu, beta, theta):
    """Exact conditional draws, top-down, one per draw of the sds and slopes (leading axis)."""
    N, n_ds, P = sigma.shape
    D = n_drugs
    m_max = sxx.shape[2] - 1
    ws = workspace(sxx, n_drugs, P)
    s2, o2, lam, sxy_a, syy_a, F, h, Hk, gk, Mk, Pik, pik, Lam, ell, Md, Pib, pib, hmu, gmu, scratch, const = ws
    nmax = max(m_max, D)
    L = np.empty((nmax, nmax, P))
    r = np.empty((nmax, P))
    e = np.empty((nmax, P))
    logdet = np.empty(P)
    for n in range(N):
        td2 = tau_d[n] * tau_d[n]
        tk2 = tau_k[n] * tau_k[n]
        forward(sigma[n], omega[n], b[n], td2, tk2, lam_d[n], lam_u[n], sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects,
                m_units, units, unit_drug, n_drugs, ws)
        for p in range(P):
            v = prior_sd[n, p] * prior_sd[n, p]
            amu = 1.0 + v * hmu[p]
            mu[n, p] = (prior_mean[n, p] + v * gmu[p]) / amu + np.sqrt(v / amu) * xi_mu[n, p]
        # beta ~ Normal(c + td2 Md (ell - Lam c), td2 Md), c = lam_d x mu
        chol(Md, D, L, logdet)
        for i in range(D):
            for p in range(P):
                r[i, p] = ell[i, p]
            for j in range(D):
                for p in range(P):
                    r[i, p] -= Lam[i, j, p] * lam_d[n, j] * mu[n, p]
        for i in range(D):
            for p in range(P):
                beta[n, i, p] = lam_d[n, i] * mu[n, p]
            for j in range(D):
                for p in range(P):
                    beta[n, i, p] += td2[p] * Md[i, j, p] * r[j, p]
            for j in range(i + 1):
                for p in range(P):
                    beta[n, i, p] += np.sqrt(td2[p]) * L[i, j, p] * xi_beta[n, j, p]
        # theta_k ~ Normal(e + tk2 Mk (gk - Hk e), tk2 Mk), e = the units' scales x drug effects
        for k in range(n_ds):
            m = m_units[k]
            chol(Mk[k], m, L, logdet)
            for i in range(m):
                for p in range(P):
                    e[i, p] = lam_u[n, units[k, i]] * beta[n, unit_drug[units[k, i]], p]
            for i in range(m):
                for p in range(P):
                    r[i, p] = gk[k, i, p]
                for j in range(m):
                    for p in range(P):
                        r[i, p] -= Hk[k, i, j, p] * e[j, p]
            for i in range(m):
                u = units[k, i]
                for p in range(P):
                    theta[n, u, p] = e[i, p]
                for j in range(m):
                    for p in range(P):
                        theta[n, u, p] += tk2[p] * Mk[k, i, j, p] * r[j, p]
                for j in range(i + 1):
                    for p in range(P):
                        theta[n, u, p] += np.sqrt(tk2[p]) * L[i, j, p] * xi_theta[n, units[k, j], p]



#: The statistics travel packed in two flat arrays, so the compiled model takes them as two
#: data inputs (shared variables) and does not depend on their values or sizes.
#: ``ints``: the sizes K (datasets), C (scan-count classes + 1), R (1 + a dataset's unit slots), Q
#: (slopes), P (outcomes), U (units), M (units' width), D (drugs), then m_units (K), units (K, M)
#: and unit_drug (U); ``floats``: sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects, flattened.
HEADER = 8


@numba.njit(cache=True)
def float_sizes(K, C, R, Q, P):
    return np.array([K * C * R * R, K * C * R * Q, K * C * Q * Q, K * C * R * P, K * C * Q * P, K * C * P, C - 1,
                     K * (C - 1)])


@numba.njit(cache=True)
def unpack(floats, ints):
    """The kernel's statistics (views into the packed arrays) and the number of drugs."""
    K, C, R, Q, P, U, M, D = ints[0], ints[1], ints[2], ints[3], ints[4], ints[5], ints[6], ints[7]
    ends = np.cumsum(float_sizes(K, C, R, Q, P))
    sxx = floats[:ends[0]].reshape((K, C, R, R))
    sxw = floats[ends[0]:ends[1]].reshape((K, C, R, Q))
    sww = floats[ends[1]:ends[2]].reshape((K, C, Q, Q))
    sxy = floats[ends[2]:ends[3]].reshape((K, C, R, P))
    swy = floats[ends[3]:ends[4]].reshape((K, C, Q, P))
    syy = floats[ends[4]:ends[5]].reshape((K, C, P))
    sizes = floats[ends[5]:ends[6]]
    n_subjects = floats[ends[6]:ends[7]].reshape((K, C - 1))
    m_units = ints[HEADER:HEADER + K]
    units = ints[HEADER + K:HEADER + K + K * M].reshape((K, M))
    unit_drug = ints[HEADER + K + K * M:HEADER + K + K * M + U]
    return sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects, m_units, units, unit_drug, D


_F64 = numba.types.CPointer(numba.types.float64)
_I64 = numba.types.CPointer(numba.types.int64)
#: The C signature of :func:`kernel_entry`: the 9 inputs, the packed statistics, the 9 gradients.
ENTRY_SIGNATURE = numba.types.float64(*([_F64] * 9), _F64, _I64, *([_F64] * 9))


@numba.cfunc(ENTRY_SIGNATURE, cache=True, error_model="numpy")
def kernel_entry(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam_d, lam_u, floats, ints,
                 g_sigma, g_omega, g_b, g_tau_d, g_tau_k, g_prior_mean, g_prior_sd, g_lam_d, g_lam_u):
    """:func:`kernel` behind a C entry point, which the compiled model calls by symbol name.

    A jitted caller that calls :func:`kernel` directly links its machine code into its own
    module and optimises it again (~13 s of nutpie's compile, every run); a C function is
    called as it is, from the on-disk cache. ``floats``/``ints``: the packed statistics.
    """
    header = numba.carray(ints, (HEADER,))
    K, C, R, Q, P, U, M, D = header[0], header[1], header[2], header[3], header[4], header[5], header[6], header[7]
    st = unpack(numba.carray(floats, (float_sizes(K, C, R, Q, P).sum(),)),
                numba.carray(ints, (HEADER + K + K * M + U,)))
    return kernel(numba.carray(sigma, (K, P)), numba.carray(omega, (K, P)), numba.carray(b, (Q, P)),
                  numba.carray(tau_d, (P,)), numba.carray(tau_k, (P,)), numba.carray(prior_mean, (P,)),
                  numba.carray(prior_sd, (P,)), numba.carray(lam_d, (D,)), numba.carray(lam_u, (U,)),
                  st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9], st[10], D,
                  numba.carray(g_sigma, (K, P)), numba.carray(g_omega, (K, P)), numba.carray(g_b, (Q, P)),
                  numba.carray(g_tau_d, (P,)), numba.carray(g_tau_k, (P,)), numba.carray(g_prior_mean, (P,)),
                  numba.carray(g_prior_sd, (P,)), numba.carray(g_lam_d, (D,)), numba.carray(g_lam_u, (U,)))
