package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
)

// keyOptions are the new secret of 'snapshot key add' and 'key passwd'.
type keyOptions struct {
	newPasswordFile string
	newKMSKey       string
}

func newSnapshotKeyCommand(o *snapshotOptions) *cobra.Command {
	ko := &keyOptions{}
	cmd := &cobra.Command{
		Use:   "key",
		Short: "List, add, remove or change what opens the snapshots' key (password, KMS key)",
		Long: `The snapshots are encrypted under one repository key, which never changes;
each key object in the repository wraps it once, with a password or an AWS
KMS key. 'key passwd' changes the password (or moves to a KMS key, or back)
without rewriting any snapshot: it adds a key object for the new secret,
checks that it opens, and removes the one this command opened the repository
with. Whoever read the repository key with the old secret keeps it: after a
leak, also rotate the credentials of the state bucket.

The new password is read from --new-password-file (its first line) or from
CONVEYOR_SNAPSHOT_NEW_PASSWORD, never from a flag; --new-kms-key names a
symmetric KMS key instead. When the current password is the one 'conveyor
up' generated in the data dir, 'key passwd' writes the new one there;
otherwise set snapshot.password_file or CONVEYOR_SNAPSHOT_PASSWORD (or
snapshot.kms_key) to the new secret before the next command.`,
		Example: `  conveyor snapshot key list
  CONVEYOR_SNAPSHOT_NEW_PASSWORD=... conveyor snapshot key passwd
  conveyor snapshot key add --new-password-file /run/secrets/second-password
  conveyor snapshot key passwd --new-kms-key alias/conveyor-snapshots
  conveyor snapshot key remove 3f2a`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the key objects; the one in use is marked",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runSnapshotKeyList(cmd.Context(), o) },
	}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a key object: a second password or a KMS key opens the snapshots too",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runSnapshotKeyAdd(cmd.Context(), o, ko, false) },
	}
	passwd := &cobra.Command{
		Use:   "passwd",
		Short: "Replace the key in use by a new password or KMS key",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runSnapshotKeyAdd(cmd.Context(), o, ko, true) },
	}
	for _, c := range []*cobra.Command{add, passwd} {
		c.Flags().StringVar(&ko.newPasswordFile, "new-password-file", "", "file whose first line is the new password (or CONVEYOR_SNAPSHOT_NEW_PASSWORD)")
		c.Flags().StringVar(&ko.newKMSKey, "new-kms-key", "", "wrap with this AWS KMS key (key ID, ARN, alias/name) instead of a password")
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a key object (not the one in use)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := openSnapshots(cmd.Context(), o, false)
			if err != nil {
				return err
			}
			defer r.close()
			id, err := r.RemoveKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Out, "removed key %s\n", id)
			return nil
		},
	}
	cmd.AddCommand(list, add, passwd, remove)
	return cmd
}

func runSnapshotKeyList(ctx context.Context, o *snapshotOptions) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return o.printJSON(keys)
	}
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tCREATED\tHOST\tIN USE")
	for _, k := range keys {
		use := ""
		if k.Current {
			use = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Kind, k.Created.Local().Format(time.DateTime), k.Host, use)
	}
	return tw.Flush()
}

// newKey is the wrapper of the new secret, and the new password (for the
// generated password file) when it is one.
func (o *snapshotOptions) newKey(ko *keyOptions) (snaplocal.KeyWrapper, string, error) {
	c, err := o.config()
	if err != nil {
		return nil, "", err
	}
	env := ""
	if c.getenv != nil {
		env = c.getenv("CONVEYOR_SNAPSHOT_NEW_PASSWORD")
	}
	given := 0
	for _, s := range []string{ko.newPasswordFile, ko.newKMSKey, env} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		return nil, "", usageErrorf("give the new secret once: --new-password-file FILE, CONVEYOR_SNAPSHOT_NEW_PASSWORD, or --new-kms-key KEY")
	}
	switch {
	case ko.newKMSKey != "":
		w, err := c.kmsWrapper(ko.newKMSKey, "--new-kms-key")
		return w, "", err
	case ko.newPasswordFile != "":
		b, err := os.ReadFile(ko.newPasswordFile)
		if err != nil {
			return nil, "", usageErrorf("--new-password-file: %v", err)
		}
		env = strings.SplitN(strings.TrimRight(string(b), "\r\n"), "\n", 2)[0]
		if env == "" {
			return nil, "", usageErrorf("--new-password-file %s: the first line is empty", ko.newPasswordFile)
		}
	}
	return snaplocal.NewPassword(env), env, nil
}

func runSnapshotKeyAdd(ctx context.Context, o *snapshotOptions, ko *keyOptions, replace bool) error {
	w, pw, err := o.newKey(ko)
	if err != nil {
		return err
	}
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	if !replace {
		id, err := r.AddKey(ctx, w)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "added key %s (%s): it opens the snapshots too\n", id, w.Kind())
		return nil
	}
	env, file := r.cfg.snapshotPasswordSource()
	generated := r.cfg.Snapshot.KMSKey == "" && !env && r.cfg.Snapshot.PasswordFile == ""
	// The generated password file gets the new password after the new
	// key object is stored and before the old one goes: interrupted
	// anywhere, the file holds a password that opens the repository.
	var between func(string) error
	if generated && pw != "" {
		between = func(string) error { return writeSecretFile(file, pw) }
	}
	added, removed, err := r.ReplaceKeyThen(ctx, w, between)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "added key %s (%s), removed key %s: only the new %s opens the snapshots now\n", added, w.Kind(), removed, secretName(w))
	switch {
	case between != nil:
		fmt.Fprintf(o.Out, "wrote the new password to %s: copy it somewhere safe, away from this machine\n", file)
	case generated:
		fmt.Fprintf(o.Out, "set snapshot.kms_key to %s and remove %s\n", ko.newKMSKey, file)
	case pw != "":
		fmt.Fprintln(o.Out, "set snapshot.password_file or CONVEYOR_SNAPSHOT_PASSWORD to the new password before the next command (and restart conveyor up)")
	default:
		fmt.Fprintf(o.Out, "set snapshot.kms_key to %s (and unset the password) before the next command (and restart conveyor up)\n", ko.newKMSKey)
	}
	return nil
}

func secretName(w snaplocal.KeyWrapper) string {
	if w.Kind() == "password" {
		return "password"
	}
	return "KMS key"
}

// writeSecretFile replaces file's content by secret (a line, mode 0600)
// with a rename, so that it is never seen half written.
func writeSecretFile(file, secret string) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".snapshot-password-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := fmt.Fprintln(tmp, secret); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
