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
// entries with mode, mtime, size, inode and chunk list), each addressed by
// the BLAKE3 hash of its plaintext. Objects are written in the order packs,
// index, snapshot, so an interrupted run leaves only packs that nothing
// references, which Prune removes. It is not a general backup tool: one
// source directory, no encryption (the bucket is the trust boundary).
package local
