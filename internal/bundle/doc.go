// Package bundle makes a processor bundle ready to run: a directory that
// holds the processor executable and what it needs, and optionally a
// `setup` script that prepares the machine for it (installs packages,
// builds a virtual environment).
//
// The layout of a bundle directory:
//
//	processor   the executable the worker runs for every job (unless the
//	            configuration's processor.command names another file in it)
//	setup       optional; run once per bundle version, as the worker's user
//	            (root on EC2), before the worker takes jobs
//	...         anything else the processor needs
//
// A bundle travels as a zip archive (Pack) named by its SHA-256; a Store
// unpacks each version, from an archive or a directory, into its own
// directory (Unpack refuses entries and
// symlinks that would leave it), runs its setup once under a lock, and
// marks success with a stamp written only after setup succeeded. It is not
// a package manager: what setup installs is the bundle's business.
package bundle
