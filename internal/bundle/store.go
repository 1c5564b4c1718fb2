package bundle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Store keeps prepared bundles under Root: each archive version unpacked
// into Root/<sha256>/, and per version a lock, a setup log and, once its
// setup succeeded, a stamp. Root belongs on the machine whose packages
// setup installs (on EC2 the root volume, not the snapshotted data
// volume: a restored volume on a fresh instance must run setup again).
type Store struct {
	Root string
}

// Bundle is a prepared bundle version.
type Bundle struct {
	// Dir holds the bundle's files.
	Dir string
	// SHA256 is its version: the hex SHA-256 of its archive (HashDir of
	// a directory).
	SHA256 string
}

// Version is how job records name the bundle: "bundle:sha256:<hex>".
func (b Bundle) Version() string { return "bundle:sha256:" + b.SHA256 }

// SetupError is a setup script that did not succeed.
type SetupError struct {
	SHA256   string
	ExitCode int    // -1 when it did not exit (killed, or could not start)
	LastLine string // the last non-empty line of its output
	Log      string // where its whole output is
	Err      error
}

func (e *SetupError) Error() string {
	return fmt.Sprintf("processor bundle %s setup failed (exit %d): %s; its output is in %s", short(e.SHA256), e.ExitCode, e.LastLine, e.Log)
}

func (e *SetupError) Unwrap() error { return e.Err }

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// Open returns the bundle at src, ready to run: src is a bundle directory
// or a zip archive of one (Pack). Either way the bundle runs from its own
// copy, Root/<sha256>/, made once per version: an archive is checked
// against wantSHA256 when that is set, a directory is packed first (its
// version is HashDir, the SHA-256 of the archive the stack would ship),
// so the files a job runs are exactly those its version names, whatever
// happens to the directory meanwhile, and what setup writes into the
// bundle's copy (a virtual environment) never changes its version. Open
// then runs the bundle's setup unless this version's has succeeded on
// this machine (EnsureSetup), writing its output to out as well as to the
// setup log.
func (s Store) Open(ctx context.Context, src, wantSHA256 string, out io.Writer) (Bundle, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return Bundle{}, fmt.Errorf("processor.bundle: %w; point it at a bundle directory or a .zip of one", err)
	}
	if sha := strings.ToLower(wantSHA256); sha != "" && !fi.IsDir() {
		// A version's directory exists only once its archive was checked
		// and unpacked whole: later starts (every `worker run`) need not
		// read the archive again.
		b := Bundle{Dir: filepath.Join(s.Root, sha), SHA256: sha}
		if _, err := os.Stat(b.Dir); err == nil {
			return b, s.EnsureSetup(ctx, b, out)
		}
	}
	archive := src
	if fi.IsDir() {
		if err := os.MkdirAll(s.Root, 0o755); err != nil {
			return Bundle{}, err
		}
		tmp, err := os.CreateTemp(s.Root, ".pack-*.zip")
		if err != nil {
			return Bundle{}, err
		}
		defer os.Remove(tmp.Name())
		err = Pack(src, tmp)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return Bundle{}, fmt.Errorf("processor.bundle: %w", err)
		}
		archive = tmp.Name()
	}
	sha := strings.ToLower(wantSHA256)
	if sha == "" {
		if sha, err = HashFile(archive); err != nil {
			return Bundle{}, err
		}
	} else if err := Verify(archive, sha); err != nil {
		if fi.IsDir() {
			return Bundle{}, fmt.Errorf("%w: bundle directory %s is not version %s", ErrHashMismatch, src, sha)
		}
		return Bundle{}, err
	}
	b := Bundle{Dir: filepath.Join(s.Root, sha), SHA256: sha}
	if err := s.unpackOnce(archive, b); err != nil {
		return Bundle{}, err
	}
	if err := s.EnsureSetup(ctx, b, out); err != nil {
		return b, err
	}
	return b, nil
}

// unpackOnce unpacks the archive unless its directory exists (Unpack
// renames a complete one into place, so one that exists is whole).
func (s Store) unpackOnce(archive string, b Bundle) error {
	if _, err := os.Stat(b.Dir); err == nil {
		return nil
	}
	err := Unpack(archive, b.Dir)
	if err != nil && errors.Is(err, fs.ErrExist) {
		return nil // another worker unpacked it first
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		if _, serr := os.Stat(b.Dir); serr == nil {
			return nil // the same, from the rename
		}
	}
	return err
}

// stamp, lock and log paths of a version.
func (s Store) stamp(b Bundle) string    { return filepath.Join(s.Root, b.SHA256+".setup-ok") }
func (s Store) lockFile(b Bundle) string { return filepath.Join(s.Root, b.SHA256+".lock") }

// SetupLog is where the output of a version's setup goes.
func (s Store) SetupLog(b Bundle) string { return filepath.Join(s.Root, b.SHA256+".setup.log") }

// SetupDone says whether this version's setup has succeeded on this machine.
func (s Store) SetupDone(b Bundle) bool {
	_, err := os.Stat(s.stamp(b))
	return err == nil
}

// EnsureSetup runs the bundle's setup script unless this version's has
// succeeded before (its stamp exists). Two processes on one machine take
// turns on a lock: the second waits and then finds the stamp. The stamp
// is written only after the script exits 0, so a failed or interrupted
// setup is run again at the next start. A bundle with no setup needs
// none. It returns a *SetupError when the script fails.
func (s Store) EnsureSetup(ctx context.Context, b Bundle, out io.Writer) error {
	setup := filepath.Join(b.Dir, SetupFile)
	if _, err := os.Lstat(setup); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if s.SetupDone(b) {
		return nil
	}
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		return err
	}
	unlock, err := lock(ctx, s.lockFile(b))
	if err != nil {
		return err
	}
	defer unlock()
	if s.SetupDone(b) {
		return nil // another process ran it while we waited
	}
	logf, err := os.OpenFile(s.SetupLog(b), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s setup of bundle %s\n", time.Now().UTC().Format(time.RFC3339), b.SHA256)
	var tail tailWriter
	w := io.MultiWriter(logf, &tail)
	if out != nil {
		w = io.MultiWriter(logf, &tail, out)
	}
	cmd := exec.CommandContext(ctx, setup)
	cmd.Dir = b.Dir
	cmd.Env = append(os.Environ(), "CONVEYOR_BUNDLE_DIR="+b.Dir)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		last := tail.last()
		if last == "" {
			last = err.Error()
		}
		fmt.Fprintf(logf, "--- setup failed: %v\n", err)
		return &SetupError{SHA256: b.SHA256, ExitCode: code, LastLine: last, Log: s.SetupLog(b), Err: err}
	}
	fmt.Fprintf(logf, "--- setup succeeded\n")
	// The stamp goes in whole or not at all.
	tmp := s.stamp(b) + ".tmp"
	if err := os.WriteFile(tmp, []byte(time.Now().UTC().Format(time.RFC3339)+" "+b.SHA256+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.stamp(b))
}

// lock takes an exclusive flock on name, waiting (polling, so ctx can end
// the wait) while another process holds it.
func lock(ctx context.Context, name string) (func(), error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				// Unlocked before the close: a child being started elsewhere
				// in this process holds a copy of the descriptor until it
				// executes, and would keep the lock a moment longer.
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tailWriter keeps the last few KiB written, for the last line.
type tailWriter struct{ buf []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8192 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tailWriter) last() string {
	lines := bytes.Split(bytes.TrimSpace(t.buf), []byte("\n"))
	return strings.TrimSpace(string(lines[len(lines)-1]))
}
