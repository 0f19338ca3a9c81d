/*
 * fuzz_batch.c - libFuzzer target for the whole batch path (rt_dp_process).
 *
 * An input is a small program: a header byte picks the config variant (NAT
 * port range, loose pickup, checksum checks, mapping and filtering, a port
 * forward with or without full NAT), then a series of packets, each
 * [flags][len hi][len lo][bytes], where flags pick the input interface, how
 * far the clock moves, and whether the buffer has spare room (for generated
 * ICMP) or ends exactly at the packet, so that any read past it is caught by
 * AddressSanitizer.  Every ICMP error is also sent as a copy whose quote's
 * lengths are inconsistent (mangle_quote).  Every few packets the table is swept.  A fresh data
 * plane per input keeps every run reproducible.  Connection events and drop
 * samples are on in half the variants, into a ring of 8 that fills up.  In
 * one variant in five a host link leads to the router's services; in one in
 * three, mappings LAN hosts asked for (portmap.c) are loaded.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include "rt.h"

#define MAX_PKTS 64

static bool is_host_variant(uint8_t variant)
{
    return variant % 5 == 1;
}

static struct rt_dp *make_dp(uint8_t variant)
{
    struct rt_dp_params p = {.ct_capacity = 32, .batch = 1, .slot_size = 65536,
                             .seed = variant};
    struct rt_dp *dp = rt_dp_new(&p);
    if (!dp)
        abort();
    /* lan0 192.168.1.1/24 (zone 0), wan0 203.0.113.1/24 (zone 1, mtu 1400). */
    /* IPv6: fd00:1::1/64 on lan0, 2001:db8:2::1/64 on wan0 (mtu 1400 there
     * too, so "packet too big" is reachable), default route out of wan0,
     * NPTv6 fd00:1::/48 <-> 2001:db8:abc::/48 on wan0, NAT66 masquerade of
     * every other source leaving through wan0. */
    /* In one variant in five, lan0 offers the router's services and a host
     * link rt-self 169.254.53.1/30 (zone 2) leads to them. */
    bool host = is_host_variant(variant);
    struct rt_iface_cfg ifs[3] = {
        {.fd = -1, .addr = htonl(0xc0a80101), .mtu = 1500, .zone = 0,
         .rp_filter = variant % 3, .flags = host ? RT_IF_SERVICES : 0,
         .addr6 = {0xfd, 0, 0, 1, [15] = 1}, .has_addr6 = 1},
        {.fd = -1, .addr = htonl(0xcb007101), .mtu = 1400, .zone = 1,
         .rp_filter = (variant >> 2) % 3,
         .addr6 = {0x20, 0x01, 0x0d, 0xb8, 0, 2, [15] = 1}, .has_addr6 = 1},
        {.fd = -1, .addr = htonl(0xa9fe3501), .mtu = 1500, .zone = 2, .flags = RT_IF_HOST},
    };
    struct rt_route6_cfg routes6[3] = {
        {.prefix = {0xfd, 0, 0, 1}, .plen = 64, .iface = 0},
        {.prefix = {0x20, 0x01, 0x0d, 0xb8, 0, 2}, .plen = 64, .iface = 1},
        {.prefix = {0}, .plen = 0, .iface = 1},
    };
    struct rt_npt6_cfg npt6[1] = {{.inside = {0xfd, 0, 0, 1},
                                   .outside = {0x20, 0x01, 0x0d, 0xb8, 0x0a, 0xbc},
                                   .plen = 48, .iface = 1}};
    struct rt_masq6_cfg masq6[1] = {{.src_plen = 0, .out_iface = 1}};
    struct rt_fw_rule fw[3] = {
        {.chain = RT_FW_FORWARD, .action = RT_FW_REJECT, .proto = 6, .from_zone = 0,
         .to_zone = -1, .icmp_type = -1, .port_min = 25, .port_max = 25},
        {.chain = RT_FW_FORWARD, .action = RT_FW_DROP, .proto = 6,
         .states = RT_FW_ESTABLISHED | RT_FW_RELATED, .from_zone = -1, .to_zone = -1,
         .icmp_type = -1, .port_min = 8443, .port_max = 8443},
        {.chain = RT_FW_INPUT, .action = RT_FW_REJECT, .from_zone = 1, .to_zone = -1,
         .icmp_type = -1},
    };
    struct rt_route_cfg routes[4] = {
        {.prefix = htonl(0xc0a80100), .plen = 24, .iface = 0},
        {.prefix = htonl(0xcb007100), .plen = 24, .iface = 1},
        {.prefix = 0, .plen = (variant & 8) ? 1 : 0, .iface = 1},
        {.prefix = htonl(0xa9fe3500), .plen = 30, .iface = 2},
    };
    struct rt_nat_cfg nat[1] = {{.src_prefix = 0, .src_plen = 0, .out_iface = 1}};
    struct rt_dnat_cfg fwd[1] = {{.addr = htonl(0xcb007101), .to_addr = htonl(0xc0a80102),
                                  .port_min = 80, .port_max = 90, .to_port = 8080,
                                  .proto = 6, .masquerade = (variant & 128) != 0}};
    uint8_t policy[9] = {1, 1, 0, (variant & 16) ? 1 : 0, 0, 0, 1, 1, 0};
    uint32_t timeouts[64];
    uint32_t n = rt_n_timeouts();
    for (uint32_t i = 0; i < n; i++)
        timeouts[i] = 1 + rt_timeout_default(i) % ((variant & 32) ? 5 : 100000);
    struct rt_tables t = {
        .ifaces = ifs, .n_ifaces = host ? 3 : 2, .routes = routes, .n_routes = host ? 4 : 3,
        .nat = nat, .n_nat = 1, .n_zones = 3, .zone_policy = policy,
        .timeouts = timeouts, .n_timeouts = n,
        .port_min = (variant & 2) ? 40000 : 1024,
        .port_max = (variant & 2) ? 40003 : 65535,
        .flags = ((variant & 1) ? RT_F_TCP_LOOSE : 0) |
                 ((variant & 4) ? RT_F_L4_CSUM : 0) |
                 ((variant & 64) ? 0 : RT_F_PRESERVE_PORTS) |
                 ((variant & 8) ? 0 : RT_F_EIM),
        .dnat = fwd, .n_dnat = 1,
        .fw_rules = fw, .n_fw_rules = (variant & 32) ? 3 : 0,
        .input_policy = variant % 3,
        .icmp_rate = (variant & 16) ? 3 : 0,
        .src_conn_cap = (variant & 1) ? 3 : 0,
        .src_new_rate = (variant & 2) ? 5 : 0,
        .nat_filtering = (variant >> 4) % 3,
        .tcp_max_retrans = 1 + variant % 15,
        .routes6 = routes6, .n_routes6 = 3,
        .npt6 = npt6, .n_npt6 = (variant & 4) ? 1 : 0,
        .masq6 = masq6, .n_masq6 = (variant & 8) ? 1 : 0,
        .src_prefix6 = (variant & 16) ? 64 : 0,
    };
    if (variant % 7 == 3)
        t.flags |= RT_F_TCP_LIBERAL;
    if (rt_dp_load(dp, &t) != 0)
        abort();
    /* In one variant in three, mappings LAN hosts asked for: UDP and TCP
     * 7000 -> 192.168.1.2:6000 (the TCP one for one peer network), and a
     * pinhole to fd00:1::2 port 443 from wan0. */
    if (variant % 3 == 2) {
        struct rt_portmap pm[3] = {
            {.family = 4, .proto = 17, .iface = 1, .ext_port = 7000, .int_port = 6000,
             .int_addr = {192, 168, 1, 2}},
            {.family = 4, .proto = 6, .iface = 1, .ext_port = 7000, .int_port = 6000,
             .int_addr = {192, 168, 1, 2}, .n_filters = 1,
             .filters = {{.addr = {198, 51, 100}, .plen = 24}}},
            {.family = 6, .proto = 6, .iface = 1, .int_port = 443,
             .int_addr = {0xfd, 0, 0, 1, [15] = 2}},
        };
        if (rt_dp_set_portmaps(dp, pm, 3) != 0)
            abort();
    }
    /* Events on in half the variants, with a ring small enough to fill. */
    if ((variant & 1) &&
        rt_events_enable(dp, 1, ~0ull, (variant & 2) ? 2 : 1000, 8) != 0)
        abort();
    return dp;
}

/*
 * Quotes with inconsistent lengths, on purpose: for an ICMP or ICMPv6 error,
 * a copy whose quoted packet claims more than it holds (the inner IPv4
 * header length and total length, the first inner IPv6 extension header's
 * length, the inner TCP data offset) and is cut at a point chosen by 'salt',
 * in a buffer that ends exactly at the packet.  Returns the copy's length,
 * or 0 if the packet is no error.  The outer lengths are kept consistent so
 * that the copy gets past the outer parse to the quote.
 */
static size_t mangle_quote(const uint8_t *pkt, size_t len, uint8_t salt,
                           uint8_t *out)
{
    size_t inner;
    if (len >= 20 + 8 + 20 && (pkt[0] >> 4) == 4 && (pkt[0] & 15) == 5 &&
        pkt[9] == 1 && (pkt[20] == 3 || pkt[20] == 11 || pkt[20] == 12)) {
        inner = 28;
    } else if (len >= 40 + 8 + 40 && (pkt[0] >> 4) == 6 && pkt[6] == 58 &&
               pkt[40] < 128) {
        inner = 48;
    } else {
        return 0;
    }
    size_t cut = inner + 1 + salt % (len - inner);  /* keep at least a byte */
    memcpy(out, pkt, cut);
    uint8_t *q = out + inner;
    size_t qlen = cut - inner;
    if ((q[0] >> 4) == 4) {
        q[0] = (uint8_t)(0x40 | (5 + salt % 11));         /* IHL 5..15 */
        if (qlen >= 4) {
            q[2] = 0xff;                                  /* total length */
            q[3] = salt;
        }
        size_t ihl = (size_t)(q[0] & 15) * 4;
        if (qlen > ihl + 12 && q[9] == 6)
            q[ihl + 12] = (uint8_t)(salt & 0xf0);         /* TCP data offset */
    } else if ((q[0] >> 4) == 6 && qlen >= 42) {
        q[41] = salt;                                     /* ext header length */
        if (qlen >= 6) {
            q[4] = 0xff;                                  /* payload length */
            q[5] = salt;
        }
    }
    if ((pkt[0] >> 4) == 4) {
        out[2] = (uint8_t)(cut >> 8);
        out[3] = (uint8_t)cut;
    } else {
        out[4] = (uint8_t)((cut - 40) >> 8);
        out[5] = (uint8_t)(cut - 40);
    }
    return cut;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct rt_dp *dp = make_dp(data[0]);
    size_t off = 1;
    uint64_t now = 1000000;
    uint8_t *bufs[MAX_PKTS];
    struct rt_pkt pkts[MAX_PKTS];
    unsigned n = 0;
    while (off + 3 <= size && n < MAX_PKTS) {
        uint8_t flags = data[off];
        size_t len = ((size_t)data[off + 1] << 8) | data[off + 2];
        off += 3;
        if (len > size - off)
            len = size - off;
        size_t cap = (flags & 0x80) ? (len > 600 ? len : 600) : len;
        bufs[n] = malloc(cap ? cap : 1);
        memcpy(bufs[n], data + off, len);
        off += len;
        memset(&pkts[n], 0, sizeof pkts[n]);
        pkts[n].data = bufs[n];
        pkts[n].len = (uint32_t)len;
        pkts[n].cap = (uint32_t)cap;
        /* Interface 0 or 1, or with a host link, 2 when bit 1 is set too
         * (the router's own stack, which may send from its addresses);
         * 7 is none. */
        pkts[n].in_iface = (flags & 0x40) ? 7
                           : (is_host_variant(data[0]) && (flags & 3) == 3) ? 2 : (flags & 1);
        now += (uint64_t)((flags >> 1) & 0x1f) * 997;
        /* The mangled copy first: the original may be rewritten in place. */
        uint8_t *copy = malloc(len ? len : 1);
        size_t clen = mangle_quote(bufs[n], len, (uint8_t)(off * 31 + flags), copy);
        if (clen) {
            uint8_t *exact = malloc(clen); /* ends at the packet: ASan sees past it */
            memcpy(exact, copy, clen);
            struct rt_pkt mp = {.data = exact, .len = (uint32_t)clen,
                                .cap = (uint32_t)clen, .in_iface = flags & 1};
            rt_dp_process(dp, &mp, 1, now);
            if (mp.out_iface >= 0 && (mp.len > mp.cap || mp.len < 20))
                abort();
            free(exact);
        }
        free(copy);
        rt_dp_process(dp, &pkts[n], 1, now);
        if (pkts[n].out_iface >= 0 && (pkts[n].len > pkts[n].cap || pkts[n].len < 20))
            abort(); /* a verdict must describe bytes inside the buffer */
        n++;
        uint8_t ready[2048];
        int16_t rif;
        while (rt_dp_take_ready(dp, ready, sizeof ready, &rif) > 0)
            if (rif < 0 || rif > 1)
                abort(); /* a held fragment must leave through a real link */
        if ((n & 7) == 0) {
            struct rt_sweep_result r;
            rt_ct_sweep(dp, now, 16, &r);
            struct rt_event ev[4];
            uint32_t k = rt_events_read(dp, ev, 4);
            for (uint32_t i = 0; i < k; i++)
                if (ev[i].type < RT_EV_NEW || ev[i].type >= RT_EV_N_TYPES ||
                    (ev[i].type == RT_EV_DROP && ev[i].reason >= rt_n_drop_reasons()))
                    abort(); /* an event must be well formed */
        }
    }
    struct rt_ct_entry e[8];
    uint32_t cursor = 0;
    while (rt_ct_dump(dp, &cursor, e, 8, now) > 0)
        ;
    if (rt_ct_count(dp) > rt_ct_capacity(dp))
        abort();
    for (unsigned i = 0; i < n; i++)
        free(bufs[i]);
    rt_dp_free(dp);
    return 0;
}
