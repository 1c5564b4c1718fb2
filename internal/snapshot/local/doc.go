// Package local is the snapshot driver that keeps incremental,
// deduplicated snapshots of a directory in an S3 bucket, under a prefix:
//
//	config              repository id, version, chunker parameters
//	packs/<hash>        several MiB of blobs (zstd or raw) and their table
//	index/<hash>        which blob lives in which pack, at which offset
//	snapshots/<name>    one JSON object per snapshot: time, tree, stats
//	locks/<nonce>       who is working on the repository (see lock.go)
//
// Blobs are file chunks cut by FastCDC and the snapshot's tree (the list of
// entries with type, mode, mtime, size, inode, chunk list and, from tree
// version 2, the root ".", owner, group, xattrs, hard links, holes, FIFOs
// and devices), each addressed by the BLAKE3 hash of its plaintext.
// Objects are written in the order packs, index, snapshot, so an
// interrupted run leaves only packs that nothing references, which Prune
// removes once they are older than a margin.
//
// Locks (lock.go) fence: a holder's work runs under a context its lock
// keeper cancels when a refresh (a conditional write) fails for too long
// or finds the lock gone, and each dependent write checks it first;
// staleness is judged by the store's LastModified. Repair rebuilds the
// index from the packs; Restore reaches every path through directory
// descriptors without following symlinks. It is not a general backup
// tool: one source directory, no encryption (the bucket is the trust
// boundary).
package local
