// Package systemd holds Conveyor's systemd unit for `conveyor up`
// (conveyor.service) and the tests that check it: `systemd-analyze verify`
// on a copy whose ExecStart names a freshly built binary, the directives an
// operator relies on, that the processor sandbox (bubblewrap) still works
// under the kernel-level restrictions the unit sets, and that `conveyor up`
// serves a job under MemoryDenyWriteExecute (the kernel's PR_SET_MDWE). It
// has no code the binary uses.
package systemd
