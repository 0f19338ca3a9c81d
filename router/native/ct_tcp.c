/*
 * ct_tcp.c - TCP connection tracking: the state machine of Linux's
 * nf_conntrack_proto_tcp, with the same state names and default timeouts.
 *
 * Theory of operation.  We are the man in the middle: we see both
 * directions but cannot know whether a packet reached its destination.  A
 * packet is put in a flag class (RST > SYN(+ACK) > FIN > ACK > none, in that
 * order of priority) and the new state is read from the table below, indexed
 * by [direction][flag class][old state].  Two pseudo-states remove most of
 * the branching: sIV marks a packet that cannot be part of the connection
 * (it is INVALID and dropped) and sIG one that may or may not be valid (it
 * passes, but changes neither state nor timer).  The code after the lookup
 * only handles the exceptions: re-opening a closed tuple (RFC 1122 4.2.2.13),
 * killing an entry whose only answer was a RST, and ASSURED.
 *
 * Sequence-number window tracking is not done yet: every in-state packet
 * is accepted.
 */
#include "ct_proto.h"
#include "wire.h"

#define sNO RT_TCP_NONE
#define sSS RT_TCP_SYN_SENT
#define sSR RT_TCP_SYN_RECV
#define sES RT_TCP_ESTABLISHED
#define sFW RT_TCP_FIN_WAIT
#define sCW RT_TCP_CLOSE_WAIT
#define sLA RT_TCP_LAST_ACK
#define sTW RT_TCP_TIME_WAIT
#define sCL RT_TCP_CLOSE
#define sS2 RT_TCP_SYN_SENT2
#define sIV CT_TCP_INVALID
#define sIG CT_TCP_IGNORE

enum { F_SYN, F_SYNACK, F_FIN, F_ACK, F_RST, F_NONE, F_CLASSES };

unsigned ct_tcp_flag_class(uint8_t flags)
{
    if (flags & TCP_RST)
        return F_RST;
    if (flags & TCP_SYN)
        return (flags & TCP_ACK) ? F_SYNACK : F_SYN;
    if (flags & TCP_FIN)
        return F_FIN;
    if (flags & TCP_ACK)
        return F_ACK;
    return F_NONE;
}

static const uint8_t tcp_transitions[CT_DIRS][F_CLASSES][RT_TCP_N_STATES] = {
    [CT_DIR_ORIGINAL] = {
        /*            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
        /* A SYN opens; retransmitted SYNs keep SYN_SENT; in TIME_WAIT or
         * CLOSE it re-opens the tuple; mid-connection it may be a stale
         * retransmission, so it is ignored rather than judged. */
        [F_SYN] =    {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2},
        /* The client never sends SYN/ACK, except in a simultaneous open
         * (answering the other side's SYN from SYN_SENT2). */
        [F_SYNACK] = {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR},
        /* A FIN starts (FIN_WAIT) or completes (LAST_ACK) the close; before
         * the handshake completed it is not believable. */
        [F_FIN] =    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
        /* The third packet of the handshake establishes; an ACK with no
         * connection is a mid-stream pickup (when allowed); an ACK in
         * SYN_SENT cannot be, no SYN/ACK was seen. */
        [F_ACK] =    {sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV},
        /* A RST closes from any state. */
        [F_RST] =    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
        /* No flag at all is never valid. */
        [F_NONE] =   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
    },
    [CT_DIR_REPLY] = {
        /*            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2 */
        /* A SYN from the server is a simultaneous open (SYN_SENT2), or in
         * TIME_WAIT a re-open with the roles switched. */
        [F_SYN] =    {sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2},
        /* The standard answer to the SYN; later ones are retransmissions
         * or answers to ignored SYNs, so they are ignored. */
        [F_SYNACK] = {sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR},
        /* Same as the original direction. */
        [F_FIN] =    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV},
        /* An ACK in SYN_SENT may belong to a half-open connection the
         * server still holds: ignore it. */
        [F_ACK] =    {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG},
        [F_RST] =    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
        [F_NONE] =   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
    },
};

uint8_t ct_tcp_transition(unsigned dir, unsigned cls, unsigned state)
{
    if (dir >= CT_DIRS || cls >= F_CLASSES || state >= RT_TCP_N_STATES)
        return sIV;
    return tcp_transitions[dir][cls][state];
}

/* State -> timeout, in the order of enum rt_tcp_state. */
static const enum rt_timeout tcp_state_timeouts[RT_TCP_N_STATES] = {
    [sNO] = RT_TO_TCP_CLOSE,
    [sSS] = RT_TO_TCP_SYN_SENT,
    [sSR] = RT_TO_TCP_SYN_RECV,
    [sES] = RT_TO_TCP_ESTABLISHED,
    [sFW] = RT_TO_TCP_FIN_WAIT,
    [sCW] = RT_TO_TCP_CLOSE_WAIT,
    [sLA] = RT_TO_TCP_LAST_ACK,
    [sTW] = RT_TO_TCP_TIME_WAIT,
    [sCL] = RT_TO_TCP_CLOSE,
    [sS2] = RT_TO_TCP_SYN_SENT2,
};

/*
 * Flag combinations a TCP segment may carry (PSH, ECE and CWR aside), as in
 * Linux's tcp_valid_flags[].  Anything else (SYN|FIN, no flag, ...) is
 * INVALID whatever the state.
 */
static bool tcp_flags_valid(uint8_t flags)
{
    switch (flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG)) {
    case TCP_SYN:
    case TCP_SYN | TCP_URG:
    case TCP_SYN | TCP_ACK:
    case TCP_RST:
    case TCP_RST | TCP_ACK:
    case TCP_FIN | TCP_ACK:
    case TCP_FIN | TCP_ACK | TCP_URG:
    case TCP_ACK:
    case TCP_ACK | TCP_URG:
        return true;
    default:
        return false;
    }
}

static bool tcp_new(struct ct_conn *c, const struct pkt_meta *m,
                    const struct ct_params *p)
{
    if (!tcp_flags_valid(m->tcp_flags))
        return false;
    uint8_t s = tcp_transitions[CT_DIR_ORIGINAL]
                               [ct_tcp_flag_class(m->tcp_flags)][sNO];
    if (s == sIV || s == sIG)
        return false;
    if (s == sES && !p->tcp_loose)
        return false;  /* mid-stream pickup disabled */
    c->state = sNO;
    return true;
}

static enum ct_verdict tcp_update(struct ct_conn *c, const struct pkt_meta *m,
                                  enum ct_dir dir, const struct ct_params *p,
                                  uint64_t now_ms)
{
    if (!tcp_flags_valid(m->tcp_flags))
        return CT_INVALID;
    unsigned cls = ct_tcp_flag_class(m->tcp_flags);
    uint8_t old = c->state;
    uint8_t new_ = tcp_transitions[dir][cls][old];

    if (new_ == sIV)
        return CT_INVALID;
    if (new_ == sIG)
        return CT_IGNORE;
    if (new_ == sSS && (old == sTW || old == sCL))
        return CT_REOPEN;  /* delete and look the packet up again */

    bool seen_reply = (c->status & CT_SEEN_REPLY) != 0;
    if (cls == F_RST && !seen_reply)
        return CT_KILL;  /* the only answer was a RST: nothing to keep */

    c->state = new_;
    bool replied = seen_reply || dir == CT_DIR_REPLY;
    if (new_ == sES && (old == sSR || (old == sES && replied)))
        c->status |= CT_ASSURED;

    uint64_t t = p->timeout_ms[tcp_state_timeouts[new_]];
    /* A picked-up connection nobody answered does not get 5 days. */
    if (!replied && t > p->timeout_ms[RT_TO_TCP_UNACK])
        t = p->timeout_ms[RT_TO_TCP_UNACK];
    ct_set_timeout(c, now_ms, t);
    return CT_ACCEPT;
}

const struct ct_l4_proto ct_proto_tcp = {
    .new_conn = tcp_new,
    .update = tcp_update,
};
