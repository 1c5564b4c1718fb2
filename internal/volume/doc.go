// Package volume is the worker's persistent volume: the directory that is
// an EBS data volume on AWS (/var/lib/conveyor) and <data>/volume locally.
//
// It owns the layout (work/<job>/ for scratch, logs/<job>.log for logs,
// locks/<job>.lock and .holder), the volume's identity (ID, and Owner for one
// process on it), per-job locks that a processor inherits and a later
// worker can reap, and free-space checks. Every path it
// hands out is built from a validated job ID, never from an object key, so
// nothing a client uploads can name a file outside the volume.
package volume
