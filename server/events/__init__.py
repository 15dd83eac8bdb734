"""Server layer, events: status changes fanned out to subscribers, within and across processes."""
