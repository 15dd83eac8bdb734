"""Server layer, events: status changes fanned out to subscribers, within and across processes.

A change that reaches many subscribers is worked on once, at four layers; each saves a
different cost, so none of them stands in for another:

1. `server.persistence.shared_loads.SharedLoads`: loads by key made in one turn of the event
   loop share one query, per tenant (also for queries' DataLoaders): the database's cost.
2. `resolvers.subscriptions._read_change`: the subscribers a change reaches in one turn share
   one event object built from that read, which is what 3 needs to share anything.
3. `graphql_engine.shared_execution`: subscribers with the same document, variables and caller
   share one execution of that event object: the CPU of executing and completing it.
4. `server.events.multiplex`: sockets of one caller with identical live subscriptions (no
   `after`) run one subscription, fanned out to a queue per socket: the per-subscription
   machinery (async generator, per-event executor copy, catch-up) that 2 and 3 still repeat.
"""
