package cli

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
)

// SnapshotPasswordFile is the name, in the data dir, of the snapshot
// password `conveyor up` generates when none is configured.
const SnapshotPasswordFile = "snapshot-password"

// snapshotPasswordSource says where the snapshot password comes from:
// CONVEYOR_SNAPSHOT_PASSWORD, else snapshot.password_file, else the data
// dir's generated file. A password is never a flag: a flag shows in ps.
func (c FileConfig) snapshotPasswordSource() (env bool, file string) {
	if c.getenv != nil && c.getenv("CONVEYOR_SNAPSHOT_PASSWORD") != "" {
		return true, ""
	}
	if c.Snapshot.PasswordFile != "" {
		return false, c.Snapshot.PasswordFile
	}
	return false, filepath.Join(c.DataDir, SnapshotPasswordFile)
}

// snapshotKey returns what opens the local snapshot repository's key:
// the KMS key of snapshot.kms_key when set, else the password; nil when
// no password is set and the data dir holds no generated one (an
// encrypted repository then says so when opened, and a new one is not
// created).
func (c FileConfig) snapshotKey() (snaplocal.KeyWrapper, error) {
	if c.Snapshot.KMSKey != "" {
		return c.snapshotKMSKey()
	}
	env, file := c.snapshotPasswordSource()
	if env {
		return snaplocal.NewPassword(c.getenv("CONVEYOR_SNAPSHOT_PASSWORD")), nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) && c.Snapshot.PasswordFile == "" {
		return nil, nil
	}
	if err != nil {
		return nil, usageErrorf("snapshot.password_file: %v", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return nil, usageErrorf("snapshot password file %s is empty", file)
	}
	return snaplocal.NewPassword(pw), nil
}

// ensureSnapshotPassword makes sure `conveyor up` encrypts its snapshots
// without the user doing anything: when no password is configured and
// the data dir holds none, it writes a random one there (0600) and says
// loudly that it must be kept elsewhere too.
func (c FileConfig) ensureSnapshotPassword(errOut io.Writer) error {
	if c.Snapshot.KMSKey != "" {
		return c.snapshotKMSOnly() // KMS wraps the key: no password
	}
	env, file := c.snapshotPasswordSource()
	if env || c.Snapshot.PasswordFile != "" {
		return nil
	}
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil // another process made it meanwhile
	}
	if err != nil {
		return fmt.Errorf("write the snapshot password: %w", err)
	}
	_, err = fmt.Fprintln(f, base64.RawURLEncoding.EncodeToString(secret[:]))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return fmt.Errorf("write the snapshot password: %w", err)
	}
	fmt.Fprintf(errOut, `
*** Snapshots are encrypted with a password. A new random one was written to
***   %s
*** Copy that file somewhere safe, away from this machine (a password
*** manager, a secrets store). Without it no snapshot in the state bucket
*** can ever be read or restored: there is no other way in. To use your
*** own password instead, set snapshot.password_file or
*** CONVEYOR_SNAPSHOT_PASSWORD before the first snapshot.

`, file)
	return nil
}
