"""The compiled serve loop of ``sim.lane``: chunked-prefill or continuous batching over a
paged KV pool, priced by the roofline's own numbers, one replica, pre-timed arrivals.

Every function here mirrors, statement for statement, a piece of the Python it stands in for
(named in its docstring), so that a run gives the Engine's results bit for bit;
``tests/test_lane.py`` compares the two on random workloads. State lives in flat arrays (one
slot per request) because that is what compiled code walks fast; the loop is resumable (it
returns to Python when it needs a price it has not seen, or when its output buffers are full,
and carries on from where it stopped on the next call).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# what serve() returns
DONE, NEED_STATIC, NEED_PREFILL, FLUSH, STALL = 0, 1, 2, 3, 4
# phases of the loop (si[PHASE])
SCHEDULE, PRICE, STEP = 0, 1, 2

# cfg: int64 knobs
(C_BUDGET, C_CHUNK, C_MAX_SEQS, C_BLOCK, C_BLOCKS, C_GRAPH_MAX, C_GRAPH_ALL, C_ATTN_K,
 C_PP, C_POLICY, C_HAS_CHUNK, C_HOST_OVERLAP) = range(12)
CHUNKED, CONTINUOUS = 0, 1  # cfg[C_POLICY]
# cfgf: float64 knobs
(F_SHARE, F_FLOOR0, F_LAUNCH, F_STEP_OVH, F_SEQ_OVH, F_FLOOR1, F_PATH_S, F_PATH_KEYS, F_SPLIT_S,
 F_CALL_P) = range(10)
# si: int64 state
(PHASE, CURSOR, NRUN, WHEAD, WTAIL, FREE, NBATCH, NSTEPS, NITL, NFIN, PREEMPTED) = range(11)
SI_SIZE = 11
# sf: float64 state
NOW, DUR = range(2)
SF_SIZE = 2
# per-step integer columns (steps_i)
(S_SEQS, S_PREFILL, S_DECODE, S_KV, S_WAITING, S_RUNNING, S_DECODE_SEQS) = range(7)
STEP_INT_COLUMNS = 7

# Every function of the loop is compiled without numba's reference counting (``_nrt=False``:
# nothing here allocates, the arrays all belong to the caller) and inlined into ``serve``:
# counting references to its forty-odd arrays at each call took most of its time.
STATIC_KEY = 1 << 20  # static rows are keyed by tokens * STATIC_KEY + sequences
PREFILL_KEY = 1 << 32  # a prompt chunk's attention by new * PREFILL_KEY + cached


@njit(cache=True, _nrt=False)
def probe():
    """Compiles with the loop's options: ``sim.lane`` calls it to learn that this numba
    still takes them (numba checks options when it compiles, not when it decorates)."""
    return 1


@njit(cache=True, inline="always", _nrt=False)
def slot(keys, key):
    """Open-addressing hash table in arrays (``keys`` -1 where empty, a power of 2 long):
    the slot holding ``key``, or the empty one where it would go."""
    mask = keys.shape[0] - 1
    # a full mix (xor-shift-multiply, int64 products wrap): keys differ in their high bits
    # (tokens, a chunk's length) as much as in their low ones
    x = (key ^ (key >> 31)) * 0x7FB5D329728EA185
    x = (x ^ (x >> 27)) * 0x1B03738712FAD5C9
    h = (x ^ (x >> 33)) & mask
    while keys[h] != key and keys[h] != -1:
        h = (h + 1) & mask
    return h


@njit(cache=True)
def table_put(keys, values, key, value):
    h = slot(keys, key)
    keys[h] = key
    values[h] = value


@njit(cache=True)
def table_rehash(keys, values, new_keys, new_values):
    for h in range(keys.shape[0]):
        if keys[h] != -1:
            table_put(new_keys, new_values, keys[h], values[h])


@njit(cache=True)
def dispatch_instants(arrival):
    """When ``sim.engine.open_loop`` hands each request to the replica: its clock advances by
    ``arrival - now`` (SimPy adds the delay to its clock), and a request due already is sent at
    once, without a timeout (``timed`` 0): it reaches an idle replica with the one before it."""
    n = arrival.shape[0]
    d = np.empty(n)
    timed = np.zeros(n, dtype=np.int8)
    now = 0.0
    for i in range(n):
        if arrival[i] > now:
            now = now + (arrival[i] - now)
            timed[i] = 1
        d[i] = now
    return d, timed


@njit(cache=True, inline="always", _nrt=False)
def _allocate(held, free, i, tokens, block):
    """``PagedAllocator.allocate``: grow request ``i`` to cover ``tokens``; the pool's free
    count after, or -1 (nothing changed) if the pool is short."""
    need = -(-tokens // block) - held[i]
    if need <= 0:
        return free
    if need > free:
        return -1
    held[i] += need
    return free - need


@njit(cache=True, inline="always", _nrt=False)
def _remove(running, nrun, i):
    """``list.remove``: drop request ``i`` from the running list, keeping the order."""
    k = 0
    while running[k] != i:
        k += 1
    for j in range(k, nrun - 1):
        running[j] = running[j + 1]
    return nrun - 1


@njit(cache=True, inline="always", _nrt=False)
def _dispatch_before(t, si, d, rejected, waiting):
    """Requests the open loop has sent before instant ``t`` join the waiting queue (a request
    the scheduler rejected on arrival was recorded as such beforehand)."""
    n = d.shape[0]
    c = si[CURSOR]
    while c < n and d[c] < t:
        if not rejected[c]:
            waiting[si[WTAIL]] = c
            si[WTAIL] += 1
        c += 1
    si[CURSOR] = c


@njit(cache=True, inline="always", _nrt=False)
def _wake(si, sf, d, timed, rejected, waiting):
    """An idle replica waits for the next request it accepts; the requests sent in the same
    breath (due already: no timeout of their own) are queued before it schedules. False if
    nothing will ever arrive."""
    n = d.shape[0]
    c = si[CURSOR]
    while c < n and rejected[c]:
        c += 1
    if c >= n:
        si[CURSOR] = c
        return False
    sf[NOW] = d[c]
    waiting[si[WTAIL]] = c
    si[WTAIL] += 1
    c += 1
    while c < n and timed[c] == 0:
        if not rejected[c]:
            waiting[si[WTAIL]] = c
            si[WTAIL] += 1
        c += 1
    si[CURSOR] = c
    return True


@njit(cache=True, inline="always", _nrt=False)
def _preempt_for(i, tokens, si, cfg, prompt, out, computed, held, preempts, running,
                 waiting, in_batch, preempted):
    """``QueueingScheduler._grow`` (FCFS, recompute): preempt the running request admitted
    last among those not yet in the batch until request ``i`` fits; False if ``i`` itself was
    the one preempted."""
    while True:
        free = _allocate(held, si[FREE], i, tokens, cfg[C_BLOCK])
        if free >= 0:
            si[FREE] = free
            return True
        k = si[NRUN] - 1
        while in_batch[running[k]]:
            k -= 1
        victim = running[k]
        computed[victim] = 0
        si[PREEMPTED] += 1
        si[FREE] += held[victim]
        held[victim] = 0
        si[NRUN] = _remove(running, si[NRUN], victim)
        preempted[victim] = 1
        preempts[victim] += 1
        si[WHEAD] -= 1
        waiting[si[WHEAD]] = victim
        if victim == i:
            return False


@njit(cache=True, inline="always", _nrt=False)
def _prefilling(r, prompt, out, computed):
    """``policies.base.is_prefilling``."""
    return out[r] == 0 or prompt[r] + out[r] - computed[r] > 1


@njit(cache=True, inline="always", _nrt=False)
def _grow(r, tokens, si, cfg, prompt, out, computed, held, preempts, running, waiting,
          in_batch, preempted):
    """``allocate(req, tokens) or _grow(req, tokens, scheduled)``: the pool usually has
    room; the victim search only when it has not."""
    free = _allocate(held, si[FREE], r, tokens, cfg[C_BLOCK])
    if free >= 0:
        si[FREE] = free
        return True
    return _preempt_for(r, tokens, si, cfg, prompt, out, computed, held, preempts, running,
                        waiting, in_batch, preempted)


@njit(cache=True, inline="always", _nrt=False)
def _take(r, n, nb, batch_idx, batch_new, batch_ctx, computed, in_batch):
    """Append request ``r`` with ``n`` new tokens to the batch; the batch's new length."""
    batch_idx[nb] = r
    batch_new[nb] = n
    batch_ctx[nb] = computed[r]
    in_batch[r] = 1
    return nb + 1


@njit(cache=True, inline="always", _nrt=False)
def _start(head, n, si, sf, cfg, held, computed, first_sched, running, waiting):
    """``QueueingScheduler._start`` (greedy, no prefix cache): the head of the queue runs
    with KV for its first ``n`` tokens, if the pool has them."""
    free = _allocate(held, si[FREE], head, n, cfg[C_BLOCK])
    if free < 0:
        return False
    si[FREE] = free
    if math.isnan(first_sched[head]):
        first_sched[head] = sf[NOW]
    computed[head] = 0
    si[WHEAD] += 1
    running[si[NRUN]] = head
    si[NRUN] += 1
    return True


@njit(cache=True, inline="always", _nrt=False)
def _forget_victims(si, waiting, preempted, victims_before):
    """Clear ``preempted_now``: this pass's victims head the waiting queue (a pass that
    preempted admitted nobody)."""
    for k in range(si[WHEAD], si[WHEAD] + si[PREEMPTED] - victims_before):
        preempted[waiting[k]] = 0


@njit(cache=True, inline="always", _nrt=False)
def _go_on(m, budget, si, cfg, prompt, out, computed, held, preempts, running, waiting,
           batch_idx, batch_new, batch_ctx, in_batch, preempted, order):
    """The running requests ``order[:m]`` go on, in turn, each with what is left of its
    prompt (1 token for a decode), cut to the budget left and the chunk size, preempting
    others if the pool is short; the batch's length and the budget left after."""
    nb = 0
    for k in range(m):
        r = order[k]
        if budget <= 0:
            break
        if preempted[r]:
            continue
        n = min(prompt[r] + out[r] - computed[r], budget, cfg[C_CHUNK])
        if _grow(r, computed[r] + n, si, cfg, prompt, out, computed, held, preempts, running,
                 waiting, in_batch, preempted):
            nb = _take(r, n, nb, batch_idx, batch_new, batch_ctx, computed, in_batch)
            budget -= n
    return nb, budget


@njit(cache=True, inline="always", _nrt=False)
def _schedule_chunked(si, sf, cfg, prompt, out, computed, held, preempts, first_sched,
                      running, waiting, batch_idx, batch_new, batch_ctx, in_batch, preempted,
                      order):
    """``ChunkedPrefillScheduler.schedule`` (split prompts, FCFS, greedy admission): running
    decodes first, then prompts already started, each cut to the budget left and the chunk
    size; then waiting prompts admitted while sequences, budget and blocks allow."""
    budget = cfg[C_BUDGET]
    chunk = cfg[C_CHUNK]
    nrun = si[NRUN]
    victims_before = si[PREEMPTED]
    m = 0
    for k in range(nrun):  # decodes first
        if not _prefilling(running[k], prompt, out, computed):
            order[m] = running[k]
            m += 1
    for k in range(nrun):  # then prompts already started
        if _prefilling(running[k], prompt, out, computed):
            order[m] = running[k]
            m += 1
    nb, budget = _go_on(m, budget, si, cfg, prompt, out, computed, held, preempts, running,
                        waiting, batch_idx, batch_new, batch_ctx, in_batch, preempted, order)
    if si[PREEMPTED] == victims_before:  # as vLLM v1: no admissions in a step that preempted
        while si[WHEAD] < si[WTAIL] and si[NRUN] < cfg[C_MAX_SEQS] and budget > 0:
            head = waiting[si[WHEAD]]
            n = min(prompt[head] + out[head], budget, chunk)
            if not _start(head, n, si, sf, cfg, held, computed, first_sched, running, waiting):
                break
            nb = _take(head, n, nb, batch_idx, batch_new, batch_ctx, computed, in_batch)
            budget -= n
    _forget_victims(si, waiting, preempted, victims_before)
    si[NBATCH] = nb


@njit(cache=True, inline="always", _nrt=False)
def _schedule_continuous(si, sf, cfg, prompt, out, computed, held, preempts, first_sched,
                         running, waiting, batch_idx, batch_new, batch_ctx, in_batch,
                         preempted, order):
    """``ContinuousScheduler.schedule`` (FCFS, greedy admission): a prefill step if any
    prompt runs (chunked prompts going on, then admissions), else every running request
    decodes."""
    budget = cfg[C_BUDGET]
    chunk = cfg[C_CHUNK]
    nb = 0
    victims_before = si[PREEMPTED]
    if cfg[C_HAS_CHUNK]:  # without a chunk size no running request has prompt left
        m = 0
        for k in range(si[NRUN]):
            if _prefilling(running[k], prompt, out, computed):
                order[m] = running[k]
                m += 1
        nb, budget = _go_on(m, budget, si, cfg, prompt, out, computed, held, preempts,
                            running, waiting, batch_idx, batch_new, batch_ctx, in_batch,
                            preempted, order)
    if si[PREEMPTED] == victims_before:  # as vLLM: no admissions in a step that preempted
        while si[WHEAD] < si[WTAIL] and si[NRUN] < cfg[C_MAX_SEQS] and budget > 0:
            head = waiting[si[WHEAD]]
            n = prompt[head] + out[head]
            if cfg[C_HAS_CHUNK]:
                n = min(n, budget, chunk)
            elif nb > 0 and n > budget:
                break
            if not _start(head, n, si, sf, cfg, held, computed, first_sched, running, waiting):
                break
            nb = _take(head, n, nb, batch_idx, batch_new, batch_ctx, computed, in_batch)
            budget -= n
    _forget_victims(si, waiting, preempted, victims_before)
    if nb == 0:  # ``_schedule_decodes``
        victims_before = si[PREEMPTED]
        m = si[NRUN]
        for k in range(m):
            order[k] = running[k]
        for k in range(m):
            r = order[k]
            if preempted[r]:
                continue
            tokens = prompt[r] + out[r]
            if _grow(r, tokens, si, cfg, prompt, out, computed, held, preempts, running,
                     waiting, in_batch, preempted):
                nb = _take(r, tokens - computed[r], nb, batch_idx, batch_new, batch_ctx,
                           computed, in_batch)
        _forget_victims(si, waiting, preempted, victims_before)
    si[NBATCH] = nb


@njit(cache=True, inline="always", _nrt=False)
def _decode_call_s(call, work, power):
    """``hwmodels.kernels.attention.decode_call_s``, the same floats."""
    if power == 1.0:
        return work + call
    top = call if call > work else work
    if power >= 64 or top <= 0.0:
        return top
    return top * ((call / top) ** power + (work / top) ** power) ** (1.0 / power)


@njit(cache=True, inline="always", _nrt=False)
def price(nb, batch_new, batch_ctx, cfg, cfgf, decode_s, static_keys, static_rows,
          static_before, static_after, static_nafter, static_kernels, prefill_keys, prefill_s,
          need):
    """``RooflineModel.step_time_s`` of the batch, summed row by row in the order
    ``breakdown`` lists its rows (so the result is the same float): rows before attention,
    the decode and prefill attention rows (per-sequence costs; the call's own part,
    ``AttentionModel.call_s``, goes to the prefill row if there is one, else to the decode
    row), the rows after, the CPU's launches if they outrun the GPU, the host's work.
    Returns -1.0 with ``need`` set if a price is missing."""
    tokens = 0
    for k in range(nb):
        tokens += batch_new[k]
    h = slot(static_keys, tokens * STATIC_KEY + nb)
    if static_keys[h] == -1:
        need[0], need[1] = NEED_STATIC, tokens
        need[2] = nb
        return -1.0
    row = static_rows[h]
    t0 = 0.0
    t1 = 0.0
    n0 = 0
    n1 = 0
    longest = 0  # the longest decode context, cached + new
    for k in range(nb):
        new = batch_new[k]
        if new == 1:
            t0 += decode_s[batch_ctx[k]]
            n0 += 1
            if batch_ctx[k] + 1 > longest:
                longest = batch_ctx[k] + 1
        else:
            h = slot(prefill_keys, new * PREFILL_KEY + batch_ctx[k])
            if prefill_keys[h] == -1:
                need[0], need[1] = NEED_PREFILL, new
                need[2] = batch_ctx[k]
                return -1.0
            t1 += prefill_s[h]
            n1 += 1
    share = cfgf[F_SHARE]
    gpu = static_before[row]
    # one varlen call per layer: its decode floor and longest path, at least the prefill floor
    call = (cfgf[F_FLOOR0] + cfgf[F_PATH_S] * min(longest, cfgf[F_PATH_KEYS])
            + cfgf[F_SPLIT_S] * max(0.0, longest - cfgf[F_PATH_KEYS]))
    if n1 > 0:
        call = max(cfgf[F_FLOOR1], call)
    if n0 > 0 and n1 == 0:  # a decode-only call overlaps its parts (decode_call_s)
        gpu += _decode_call_s(call, t0 * share, cfgf[F_CALL_P])
    elif n0 > 0:
        gpu += t0 * share + 0.0
    if n1 > 0:
        gpu += t1 * share + call
    for j in range(static_nafter[row]):
        gpu += static_after[row, j]
    kernels = static_kernels[row] + cfg[C_ATTN_K]
    graphed = 0 < tokens <= cfg[C_GRAPH_MAX] and (cfg[C_GRAPH_ALL] == 1 or tokens == nb)
    total = gpu
    if not graphed:
        cpu = kernels * cfgf[F_LAUNCH] / cfg[C_PP]
        if cpu > gpu:
            total = gpu + (cpu - gpu)
    host = cfgf[F_STEP_OVH] + nb * cfgf[F_SEQ_OVH]
    if cfg[C_HOST_OVERLAP] == 1:  # hidden behind the device's time (roofline.hidden_host_s)
        return total + max(0.0, host - total)
    return total + host


@njit(cache=True, inline="always", _nrt=False)
def _complete_step(si, sf, cfg, d, rejected, prompt, output, out, computed, held, first_tok,
                   last_tok, finish, running, waiting, batch_idx, batch_new, in_batch,
                   steps_f, steps_i, itl_v, itl_w, finished):
    """``Engine._complete_step`` after the step's time has passed: requests sent meanwhile
    queue, ``QueueingScheduler.update`` applies the tokens (``sim.core.advance``), finishers
    free their blocks, and the step, its inter-token latencies and its finishers are
    recorded."""
    start = sf[NOW]
    now = start + sf[DUR]
    sf[NOW] = now
    kv_used = cfg[C_BLOCKS] - si[FREE]  # during the step: before finishers free
    _dispatch_before(now, si, d, rejected, waiting)
    nb = si[NBATCH]
    prefill = decode = decode_seqs = 0
    nitl = si[NITL]
    last_gap = -1.0
    nfin0 = si[NFIN]
    for k in range(nb):
        r = batch_idx[k]
        in_batch[r] = 0
        new = batch_new[k]
        prev = last_tok[r]
        computed[r] += new
        if computed[r] >= prompt[r] + out[r]:
            out[r] += 1
            if math.isnan(first_tok[r]):
                first_tok[r] = now
            last_tok[r] = now
            if out[r] >= output[r]:
                finish[r] = now
                finished[si[NFIN]] = r
                si[NFIN] += 1
            if not math.isnan(prev) and prev != now:
                gap = now - prev
                if nitl > si[NITL] and gap == last_gap:
                    itl_w[nitl - 1] += 1
                else:
                    itl_v[nitl] = gap
                    itl_w[nitl] = 1
                    nitl += 1
                    last_gap = gap
        if out[r] > 0 and new == 1:
            decode += new
            decode_seqs += 1
        else:
            prefill += new
    si[NITL] = nitl
    for k in range(nfin0, si[NFIN]):
        r = finished[k]
        si[NRUN] = _remove(running, si[NRUN], r)
        si[FREE] += held[r]
        held[r] = 0
    s = si[NSTEPS]
    steps_f[s, 0] = start
    steps_f[s, 1] = sf[DUR]
    steps_i[s, S_SEQS] = nb
    steps_i[s, S_PREFILL] = prefill
    steps_i[s, S_DECODE] = decode
    steps_i[s, S_KV] = kv_used
    steps_i[s, S_WAITING] = si[WTAIL] - si[WHEAD]
    steps_i[s, S_RUNNING] = si[NRUN]
    steps_i[s, S_DECODE_SEQS] = decode_seqs
    si[NSTEPS] = s + 1


@njit(cache=True, _nrt=False)
def serve(si, sf, cfg, cfgf, d, timed, rejected, prompt, output, out, computed, held,
          preempts, first_sched, first_tok, last_tok, finish, running, waiting, batch_idx,
          batch_new, batch_ctx, in_batch, preempted, order, decode_s, static_keys, static_rows,
          static_before, static_after, static_nafter, static_kernels, prefill_keys, prefill_s,
          steps_f, steps_i, itl_v, itl_w, finished, need):
    """``Engine.serve`` for one replica, resumable: returns DONE, STALL (requests left that
    nothing will ever schedule: ``SimulationStalled``), NEED_STATIC / NEED_PREFILL (``need``
    names the missing price; call again once it is in the tables) or FLUSH (the
    step, latency or finish buffers are full; empty them and call again)."""
    max_steps = steps_f.shape[0]
    max_itl = itl_v.shape[0]
    max_fin = finished.shape[0]
    while True:
        phase = si[PHASE]
        if phase == SCHEDULE:
            _dispatch_before(sf[NOW], si, d, rejected, waiting)
            if cfg[C_POLICY] == CHUNKED:
                _schedule_chunked(si, sf, cfg, prompt, out, computed, held, preempts,
                                  first_sched, running, waiting, batch_idx, batch_new,
                                  batch_ctx, in_batch, preempted, order)
            else:
                _schedule_continuous(si, sf, cfg, prompt, out, computed, held, preempts,
                                     first_sched, running, waiting, batch_idx, batch_new,
                                     batch_ctx, in_batch, preempted, order)
            if si[NBATCH] == 0:
                if not _wake(si, sf, d, timed, rejected, waiting):
                    if si[NRUN] == 0 and si[WHEAD] == si[WTAIL]:
                        return DONE
                    return STALL
                continue
            si[PHASE] = PRICE
        elif phase == PRICE:
            seconds = price(si[NBATCH], batch_new, batch_ctx, cfg, cfgf, decode_s,
                            static_keys, static_rows, static_before, static_after,
                            static_nafter, static_kernels, prefill_keys, prefill_s, need)
            if seconds < 0.0:  # ``need`` names the missing price
                return need[0]
            sf[DUR] = seconds
            si[PHASE] = STEP
        else:
            nb = si[NBATCH]
            if si[NSTEPS] >= max_steps or si[NITL] + nb > max_itl or si[NFIN] + nb > max_fin:
                return FLUSH
            _complete_step(si, sf, cfg, d, rejected, prompt, output, out, computed, held,
                           first_tok, last_tok, finish, running, waiting, batch_idx,
                           batch_new, in_batch, steps_f, steps_i, itl_v, itl_w, finished)
            si[PHASE] = SCHEDULE
