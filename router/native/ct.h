/*
 * ct.h - the connection tracking table.
 */
#ifndef RT_CT_H
#define RT_CT_H

#include "tuple.h"

/* Status bits, numbered as Linux's enum ip_conntrack_status. */
#define CT_SEEN_REPLY (1u << 1) /* a packet in the reply direction was seen */
#define CT_ASSURED (1u << 2)    /* never early-dropped */
#define CT_CONFIRMED (1u << 3)  /* inserted in the table */
#define CT_SRC_NAT (1u << 4)    /* the reply tuple differs in its dst */
#define CT_DST_NAT (1u << 5)    /* the reply tuple differs in its src */

#define CT_NIL UINT32_MAX /* end of a hash chain / no slot */

/*
 * One tracked connection.  Both tuples are in the hash table; a lookup hit
 * on tuple[d] means the packet travels in direction d.  NAT is nothing but a
 * reply tuple that is not the plain inverse of the original one.
 */
struct ct_conn {
    struct ct_tuple tuple[CT_DIRS]; /* original and reply tuples */
    uint64_t expires_ms;            /* absolute deadline, monotonic ms */
    uint64_t created_ms;            /* when the first packet was seen */
    uint64_t packets[CT_DIRS];      /* packets seen per direction */
    uint64_t bytes[CT_DIRS];        /* IP bytes seen per direction */
    uint32_t next[CT_DIRS];         /* chain links of tuple[d] (node ids) */
    uint16_t status;                /* CT_* status bits */
    uint8_t state;                  /* L4 state: enum rt_tcp_state for TCP */
    uint8_t in_use;                 /* slot holds a connection */
    uint8_t l4_flags;               /* private to the L4 tracker */
    uint8_t pad[3];                 /* explicit, zero */
};

/*
 * The table: a preallocated array of connections and a chained hash index
 * over node ids ('slot' * 2 + direction).  Sized once at start; nothing is
 * allocated per packet.
 */
struct ct_table {
    struct ct_conn *conns;   /* 'capacity' slots */
    uint32_t *buckets;       /* chain heads, 'bucket_mask' + 1 of them */
    uint32_t *free_slots;    /* stack of free slot numbers */
    uint32_t n_free;         /* entries on 'free_slots' */
    uint32_t capacity;       /* maximum number of connections */
    uint32_t count;          /* connections in the table */
    uint32_t bucket_mask;    /* number of buckets - 1 (a power of two) */
    uint32_t sweep_cursor;   /* next slot the sweep looks at */
    uint64_t seed;           /* hash key */
    uint64_t *counters;      /* the data plane's RT_CNT_* array */
};

/* Number of buckets looked at for an entry to evict when the table is full,
 * as Linux's NF_CT_EVICTION_RANGE. */
#define CT_EVICTION_RANGE 8

int ct_init(struct ct_table *ct, uint32_t capacity, uint64_t seed,
            uint64_t *counters);
void ct_destroy(struct ct_table *ct);

/* Finds the connection holding 'key'; sets '*dir'.  Expired entries found
 * on the way are removed and not returned. */
struct ct_conn *ct_find(struct ct_table *ct, const struct ct_tuple *key,
                        uint64_t now_ms, enum ct_dir *dir);

/* True if 'key' is a tuple of a live connection. */
bool ct_tuple_in_use(struct ct_table *ct, const struct ct_tuple *key,
                     uint64_t now_ms);

/*
 * Takes a free slot for a new connection whose original tuple is 'orig'.
 * When the table is full, evicts one expired or non-ASSURED entry from the
 * buckets near 'orig' (counted as early_drop); returns NULL if there is none
 * (counted as drop).  The slot is zeroed and not yet in the index.
 */
struct ct_conn *ct_alloc(struct ct_table *ct, const struct ct_tuple *orig,
                         uint64_t now_ms);

/* Puts both tuples of 'c' in the index.  Fails, and frees the slot, if
 * either tuple is already there (counted as insert_failed). */
bool ct_insert(struct ct_table *ct, struct ct_conn *c);

/* Gives back a slot from ct_alloc() that was never inserted. */
void ct_release(struct ct_table *ct, struct ct_conn *c);

/* Removes an inserted connection. */
void ct_delete(struct ct_table *ct, struct ct_conn *c);

/* Visits up to 'max_slots' slots from the saved cursor and removes the
 * expired connections.  Adds to '*visited' and '*expired'; returns true when
 * the cursor wrapped around to slot 0 (a full pass ended). */
bool ct_sweep(struct ct_table *ct, uint64_t now_ms, uint32_t max_slots,
              uint32_t *visited, uint32_t *expired);

/* Removes every connection. */
void ct_flush(struct ct_table *ct);

static inline uint32_t ct_slot(const struct ct_table *ct,
                               const struct ct_conn *c)
{
    return (uint32_t)(c - ct->conns);
}

#endif /* RT_CT_H */
