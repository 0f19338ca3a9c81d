/*
 * rt_api.c - the rest of the exports: counters and statistics, the names
 * of the X-macro lists (rt_types.h), the TCP transition table and checksum
 * helpers for the tests, struct sizes for the ABI check, and the event and
 * capture rings the control plane drains.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <pcap/pcap.h>
#include "dp.h"
#include "csum.h"

static_assert(RT_TCPF_WINDOW_SCALE == CT_TCPF_WINDOW_SCALE &&
                  RT_TCPF_SACK_PERM == CT_TCPF_SACK_PERM &&
                  RT_TCPF_BE_LIBERAL == CT_TCPF_BE_LIBERAL &&
                  RT_TCPF_DATA_UNACK == CT_TCPF_DATA_UNACK &&
                  RT_TCPF_MAXACK_SET == CT_TCPF_MAXACK_SET,
              "rt.h and ct.h TCP window flags agree");
static_assert(RT_CT_SEEN_REPLY == CT_SEEN_REPLY && RT_CT_ASSURED == CT_ASSURED &&
                  RT_CT_SRC_NAT == CT_SRC_NAT && RT_CT_DST_NAT == CT_DST_NAT &&
                  RT_CT_NAT_MAPPED == CT_NAT_MAPPED && RT_CT_TO_HOST == CT_TO_HOST &&
                  RT_CT_FROM_HOST == CT_FROM_HOST,
              "rt.h and ct.h status bits agree");

static const char *const drop_names[] = {
#define X(name, str) str,
    RT_DROP_REASONS(X)
#undef X
};
static const char *const counter_names[] = {
#define X(name, str) str,
    RT_COUNTERS(X)
#undef X
};
static const char *const timeout_names[] = {
#define X(name, str, secs) str,
    RT_TIMEOUTS(X)
#undef X
};
static const uint32_t timeout_defaults[] = {
#define X(name, str, secs) secs,
    RT_TIMEOUTS(X)
#undef X
};
static const char *const tcp_state_names[] = {
#define X(name) #name,
    RT_TCP_STATES(X)
#undef X
};

/* Copies the first min('n', 'have') of 'src' to 'out'. */
static void copy_counts(uint64_t *out, uint32_t n, const uint64_t *src, uint32_t have)
{
    if (n > have)
        n = have;
    if (n)
        memcpy(out, src, (size_t)n * sizeof *out);
}

uint32_t rt_dp_counters(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->counters, RT_N_COUNTERS);
    return RT_N_COUNTERS;
}

uint32_t rt_dp_drops(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->drops, RT_DROP_N_REASONS);
    return RT_DROP_N_REASONS;
}

int rt_dp_iface_stats(const struct rt_dp *dp, uint32_t iface,
                      struct rt_iface_stats *out)
{
    if (iface >= dp->n_ifaces)
        return -1;
    *out = dp->ifaces[iface].st;
    return 0;
}

uint32_t rt_dp_fw_stats(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->fw_counts, 2 * dp->n_fw);
    return dp->n_fw;
}

uint32_t rt_dp_lb_stats(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->lb_conns, dp->n_backends);
    return dp->n_backends;
}

uint32_t rt_n_counters(void) { return RT_N_COUNTERS; }
uint32_t rt_n_drop_reasons(void) { return RT_DROP_N_REASONS; }
uint32_t rt_n_timeouts(void) { return RT_N_TIMEOUTS; }
uint32_t rt_n_tcp_states(void) { return RT_TCP_N_STATES; }

const char *rt_counter_name(uint32_t i)
{
    return i < RT_N_COUNTERS ? counter_names[i] : NULL;
}

const char *rt_drop_name(uint32_t i)
{
    return i < RT_DROP_N_REASONS ? drop_names[i] : NULL;
}

const char *rt_timeout_name(uint32_t i)
{
    return i < RT_N_TIMEOUTS ? timeout_names[i] : NULL;
}

uint32_t rt_timeout_default(uint32_t i)
{
    return i < RT_N_TIMEOUTS ? timeout_defaults[i] : 0;
}

const char *rt_tcp_state_name(uint32_t i)
{
    return i < RT_TCP_N_STATES ? tcp_state_names[i] : NULL;
}

uint8_t rt_tcp_transition(uint32_t dir, uint32_t flag_class, uint32_t state)
{
    return ct_tcp_transition(dir, flag_class, state);
}

uint32_t rt_tcp_flag_class(uint8_t flags)
{
    return ct_tcp_flag_class(flags);
}

uint16_t rt_csum_full(const uint8_t *data, uint32_t len)
{
    return csum_full(data, len);
}

void rt_csum_replace2(uint8_t *field, uint16_t old, uint16_t new_)
{
    csum_replace2(field, old, new_);
}

void rt_csum_replace4(uint8_t *field, uint32_t old, uint32_t new_)
{
    csum_replace4(field, old, new_);
}

uint32_t rt_abi_sizeof(const char *name)
{
#define S(t)                                                                   \
    if (strcmp(name, #t) == 0)                                                 \
        return (uint32_t)sizeof(struct t);
    RT_ABI_STRUCTS(S)
#undef S
    return 0;
}

/* ---- events and capture ------------------------------------------------- */

static bool pow2_in(uint32_t v, uint32_t max)
{
    return v && v <= max && (v & (v - 1)) == 0;
}

int rt_events_enable(struct rt_dp *dp, uint32_t ct_events,
                     uint64_t drop_reasons, uint32_t drop_rate, uint32_t ring)
{
    bool on = (ct_events & ((1u << RT_EV_NEW) | (1u << RT_EV_UPDATE) |
                            (1u << RT_EV_DESTROY))) || drop_reasons;
    if (on && !pow2_in(ring, 1u << 20))
        return -1;
    if (!on) {
        free(dp->ev.ev);
        dp->ev.ev = NULL;
        dp->ev.size = 0;
        dp->ev.head = dp->ev.tail = 0;
    } else if (ring != dp->ev.size) {
        struct rt_event *ev = calloc(ring, sizeof *ev);
        if (!ev)
            return -1;
        free(dp->ev.ev);
        dp->ev.ev = ev;
        dp->ev.size = ring;
        dp->ev.head = dp->ev.tail = 0; /* queued events are not kept */
    }
    dp->ct_events = ct_events & ((1u << RT_EV_NEW) | (1u << RT_EV_UPDATE) |
                                 (1u << RT_EV_DESTROY));
    dp->ct.notify_all = (dp->ct_events & (1u << RT_EV_DESTROY)) != 0;
    dp->drop_sample = drop_reasons & ((1ull << RT_DROP_N_REASONS) - 1) &
                      ~(1ull << RT_DROP_NONE);
    dp->drop_rate = drop_rate;
    dp->drop_tokens = (uint64_t)drop_rate * 1000;
    dp->drop_refill_ms = dp->now_ms;
    return 0;
}

uint32_t rt_events_read(struct rt_dp *dp, struct rt_event *out, uint32_t n)
{
    uint32_t k = 0;
    while (k < n && dp->ev.tail != dp->ev.head)
        out[k++] = dp->ev.ev[dp->ev.tail++ & (dp->ev.size - 1)];
    return k;
}

uint64_t rt_events_lost(const struct rt_dp *dp, uint32_t type)
{
    return type < RT_EV_N_TYPES ? dp->ev.lost[type] : 0;
}

/* Compiles tcpdump expression 'expr' for raw IP packets (LINKTYPE_RAW, as
 * the TUN devices carry them) into 'f'.  Returns 0, or -1 with libpcap's
 * reason in 'err'. */
static int capture_compile(struct cap_filter *f, const char *expr, uint32_t snaplen,
                           char *err, uint32_t errlen)
{
    pcap_t *p = pcap_open_dead(DLT_RAW, (int)snaplen);
    if (!p) {
        snprintf(err, errlen, "libpcap: out of memory");
        return -1;
    }
    struct bpf_program prog;
    if (pcap_compile(p, &prog, expr, 1, PCAP_NETMASK_UNKNOWN) != 0) {
        snprintf(err, errlen, "%s", pcap_geterr(p));
        pcap_close(p);
        return -1;
    }
    f->insns = calloc(prog.bf_len ? prog.bf_len : 1, sizeof *f->insns);
    if (f->insns)
        memcpy(f->insns, prog.bf_insns, prog.bf_len * sizeof *f->insns);
    f->len = prog.bf_len;
    pcap_freecode(&prog);
    pcap_close(p);
    if (!f->insns) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int rt_capture_check(const char *filter, uint32_t snaplen, char *err, uint32_t errlen)
{
    struct cap_filter f = {0};
    if (capture_compile(&f, filter, snaplen, err, errlen) != 0)
        return -1;
    free(f.insns);
    return 0;
}

int rt_capture_start(struct rt_dp *dp, uint64_t ifaces, uint32_t snaplen,
                     uint32_t slots, const char *filter, char *err, uint32_t errlen)
{
    if (errlen)
        err[0] = 0;
    if (!ifaces || snaplen < 20 || snaplen > 65535 || !pow2_in(slots, 1u << 16)) {
        snprintf(err, errlen, "bad interfaces, snap length or ring size");
        return -1;
    }
    struct cap_filter f = {0};
    if (filter && filter[0] && capture_compile(&f, filter, snaplen, err, errlen) != 0)
        return -1;
    struct rt_capture *rec = calloc(slots, sizeof *rec);
    uint8_t *data = malloc((size_t)slots * snaplen);
    if (!rec || !data) {
        free(rec);
        free(data);
        free(f.insns);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    rt_capture_stop(dp);
    dp->cap.rec = rec;
    dp->cap.data = data;
    dp->cap.size = slots;
    dp->cap.snaplen = snaplen;
    dp->cap.ifaces = ifaces;
    dp->capf = f;
    return 0;
}

void rt_capture_stop(struct rt_dp *dp)
{
    free(dp->cap.rec);
    free(dp->cap.data);
    uint64_t lost = dp->cap.lost;
    memset(&dp->cap, 0, sizeof dp->cap);
    dp->cap.lost = lost;
    free(dp->capf.insns);
    dp->capf.insns = NULL;
    dp->capf.len = 0;
}

uint64_t rt_capture_filtered(const struct rt_dp *dp)
{
    return dp->capf.rejected;
}

uint32_t rt_capture_read(struct rt_dp *dp, struct rt_capture *recs,
                         uint8_t *data, uint32_t n)
{
    struct cap_ring *r = &dp->cap;
    uint32_t k = 0;
    while (k < n && r->tail != r->head) {
        uint32_t i = r->tail++ & (r->size - 1);
        recs[k] = r->rec[i];
        memcpy(data + (size_t)k * r->snaplen, r->data + (size_t)i * r->snaplen,
               r->rec[i].caplen);
        k++;
    }
    return k;
}

uint64_t rt_capture_lost(const struct rt_dp *dp)
{
    return dp->cap.lost;
}

void rt_dp_set_standby(struct rt_dp *dp, uint32_t on)
{
    /* Relaxed: the workers see it at their next new connection; a packet
     * or two either side of the switch is no different from one arriving
     * a moment earlier or later. */
    __atomic_store_n(&dp->standby, on ? 1u : 0u, __ATOMIC_RELAXED);
}

void rt_dp_set_lb_key(struct rt_dp *dp, uint64_t key)
{
    /* Between batches (the control plane holds the workers' lock for every
     * call): a connection's backend is in its entry, so only new
     * connections see the new key. */
    ct_hash_keys(key, dp->lb_keys);
}
