package local

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Paths is the layout of a data dir.
type Paths struct{ Root string }

// S3Root is where the embedded server keeps buckets.
func (p Paths) S3Root() string { return filepath.Join(p.Root, "s3") }

// Volume is the worker's volume.
func (p Paths) Volume() string { return filepath.Join(p.Root, "volume") }

// Credentials is the credentials file.
func (p Paths) Credentials() string { return filepath.Join(p.Root, "credentials.json") }

// RunInfo is the file describing the running pipeline.
func (p Paths) RunInfo() string { return filepath.Join(p.Root, "run.json") }

// Lock is the lock file of the running pipeline.
func (p Paths) Lock() string { return filepath.Join(p.Root, "lock") }

// Credentials are the S3 credentials of the embedded server.
type Credentials struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// LoadCredentials reads the data dir's credentials; os.ErrNotExist when
// `conveyor up` never ran there.
func LoadCredentials(p Paths) (Credentials, error) {
	var c Credentials
	b, err := os.ReadFile(p.Credentials())
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("read %s: %w", p.Credentials(), err)
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return c, fmt.Errorf("%s has no access_key_id or secret_access_key: delete it to generate new credentials", p.Credentials())
	}
	return c, nil
}

// EnsureCredentials returns the stored credentials, generating and storing
// (mode 0600) new ones on first start.
func EnsureCredentials(p Paths) (Credentials, error) {
	c, err := LoadCredentials(p)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return c, err
	}
	c = Credentials{AccessKeyID: "CONVEYOR" + randString(12, upperAlnum), SecretAccessKey: randString(40, alnum)}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp := p.Credentials() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return c, fmt.Errorf("store credentials: %w", err)
	}
	return c, os.Rename(tmp, p.Credentials())
}

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	alnum      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

func randString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// RunInfo describes a running `conveyor up`, for the other commands.
type RunInfo struct {
	PID       int    `json:"pid"`
	Endpoint  string `json:"endpoint"`
	Region    string `json:"region"`
	DataDir   string `json:"data_dir"`
	Dashboard string `json:"dashboard,omitempty"`
	// External: Endpoint is a store of its own, reached with its own
	// credentials (none are in the data dir).
	External bool `json:"external,omitempty"`
}

// ReadRunInfo reads run.json.
func ReadRunInfo(p Paths) (RunInfo, error) {
	var ri RunInfo
	b, err := os.ReadFile(p.RunInfo())
	if err != nil {
		return ri, err
	}
	return ri, json.Unmarshal(b, &ri)
}

func writeRunInfo(p Paths, ri RunInfo) error {
	b, _ := json.MarshalIndent(ri, "", "  ")
	tmp := p.RunInfo() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.RunInfo())
}

// lockDataDir takes the data dir's lock: one pipeline per data dir.
func lockDataDir(p Paths) (*os.File, error) {
	f, err := os.OpenFile(p.Lock(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p.Lock(), err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(p.Lock())
		f.Close()
		pid := strings.TrimSpace(string(b))
		return nil, fmt.Errorf("another conveyor up (pid %s) is using data dir %s; stop it or choose another --data-dir", pid, p.Root)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}
