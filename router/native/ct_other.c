/*
 * ct_other.c - connection tracking for UDP, ICMP queries and every other
 * protocol.
 *
 * Theory of operation.  None of these has a handshake, so the only state is
 * whether the other side has answered.  UDP follows Linux: 'udp' seconds
 * until a reply is seen and while the flow is younger than two seconds,
 * then 'udp_stream' and ASSURED, so that a single request/response pair
 * (DNS) does not hold an entry for long.  ICMP queries (echo, timestamp,
 * information, address mask) track the identifier in place of a port; only
 * a request may open an entry, and replies match the reply tuple through the
 * inverted type.  ICMP errors never reach these handlers: they are RELATED
 * to the flow they quote (see dp_track.c).  Other protocols are tracked by
 * addresses and protocol alone.
 */
#include "ct_proto.h"
#include "wire.h"

#define UDP_STREAM_AFTER_MS 2000 /* Linux: stream_ts = first packet + 2 s */

/* Any UDP datagram, or packet of another protocol, may open a flow. */
static bool any_new(struct ct_conn *c, struct ct_tcp_win *w, const struct pkt_meta *m,
                    const struct ct_params *p)
{
    (void)w;
    (void)c;
    (void)m;
    (void)p;
    return true;
}

static enum ct_verdict udp_update(struct ct_conn *c, struct ct_tcp_win *w,
                                  const struct pkt_meta *m, enum ct_dir dir,
                                  const struct ct_params *p, uint64_t now_ms)
{
    (void)w;
    (void)m;
    bool replied = (c->status & CT_SEEN_REPLY) || dir == CT_DIR_REPLY;
    if (replied && ct_age(c, now_ms) >= UDP_STREAM_AFTER_MS) {
        c->status |= CT_ASSURED;
        ct_set_timeout(c, now_ms, p->timeout_ms[RT_TO_UDP_STREAM]);
    } else {
        ct_set_timeout(c, now_ms, p->timeout_ms[RT_TO_UDP]);
    }
    return CT_ACCEPT;
}

static bool icmp_new(struct ct_conn *c, struct ct_tcp_win *w,
                     const struct pkt_meta *m, const struct ct_params *p)
{
    (void)w;
    (void)c;
    (void)p;
    if (m->proto == IPPROTO_ICMPV6_)
        return m->icmp_query && m->icmp_type == ICMP6_ECHO_REQUEST;
    return m->icmp_query && icmp_query_reply_type(m->icmp_type) >= 0;
}

static enum ct_verdict icmp_update(struct ct_conn *c, struct ct_tcp_win *w,
                                   const struct pkt_meta *m, enum ct_dir dir,
                                   const struct ct_params *p, uint64_t now_ms)
{
    (void)w;
    (void)dir;
    if (!m->icmp_query)
        return CT_INVALID;
    ct_set_timeout(c, now_ms, p->timeout_ms[RT_TO_ICMP]);
    return CT_ACCEPT;
}

static enum ct_verdict other_update(struct ct_conn *c, struct ct_tcp_win *w,
                                    const struct pkt_meta *m, enum ct_dir dir,
                                    const struct ct_params *p, uint64_t now_ms)
{
    (void)w;
    (void)m;
    (void)dir;
    ct_set_timeout(c, now_ms, p->timeout_ms[RT_TO_GENERIC]);
    return CT_ACCEPT;
}

const struct ct_l4_proto ct_proto_udp = {
    .new_conn = any_new,
    .update = udp_update,
};

const struct ct_l4_proto ct_proto_icmp = {
    .new_conn = icmp_new,
    .update = icmp_update,
};

const struct ct_l4_proto ct_proto_other = {
    .new_conn = any_new,
    .update = other_update,
};

const struct ct_l4_proto *ct_l4_for(uint8_t proto)
{
    switch (proto) {
    case IPPROTO_TCP_: return &ct_proto_tcp;
    case IPPROTO_UDP_: return &ct_proto_udp;
    case IPPROTO_ICMP_: return &ct_proto_icmp;
    case IPPROTO_ICMPV6_: return &ct_proto_icmp;
    default: return &ct_proto_other;
    }
}
