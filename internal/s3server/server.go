package s3server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"
)

// Server is a running embedded S3 server.
type Server struct {
	cfg    Config
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
	stop   sync.Once
	be     listingBackend // the storage engine, for Direct
	// sums is the same engine on the same directory with versitygw's
	// data-integrity ETags: Direct's writes that name a checksum
	// algorithm go through it (see Direct.PutObject).
	sums *posix.Posix
}

// running guards the one gateway versitygw allows per process; Start checks
// it so that a second Start fails with a clear message and never reaches
// posix.New, which would change the working directory again.
var running atomic.Bool

// checkXattrs reports whether dir can hold versitygw's metadata. A variable
// so that tests can simulate a filesystem without user xattrs, which this
// package's test machines may not have.
var checkXattrs = probeXattrs

// Start validates cfg, checks that the data dir supports user extended
// attributes and that the address is free, starts the gateway, waits until
// it listens and creates the configured buckets. Errors are one sentence
// that says what to do.
//
// The server runs until Stop is called or ctx is cancelled.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("s3 server config: %w", err)
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w; choose a --data-dir you can write to", err)
	}
	if err := checkXattrs(cfg.DataDir); err != nil {
		return nil, err
	}
	vdir, err := versionsDir(cfg)
	if err != nil {
		return nil, err
	}
	root, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	if err := checkAddrFree(cfg.Addr); err != nil {
		return nil, err
	}
	if !running.CompareAndSwap(false, true) {
		return nil, errors.New("an embedded S3 server is already running in this process; stop it before starting another")
	}

	opts := posix.PosixOpts{
		NewDirPerm:          0o755,
		Concurrency:         posixConcurrency,
		CopyObjectThreshold: copyObjectThreshold,
	}
	opts.VersioningDir = vdir
	var be *posix.Posix
	// posix.New announces a versioning directory on stdout, which belongs
	// to Conveyor's commands.
	var sums *posix.Posix
	withoutStdout(func() {
		be, err = posix.New(cfg.DataDir, meta.XattrMeta{}, opts)
		if err == nil {
			// The second instance shares the directory, and with it the
			// lock files that serialize conditional writes, so the two
			// exclude each other as two gateways on one directory do.
			sumOpts := opts
			sumOpts.DataIntegrityEtag = true
			sums, err = posix.New(cfg.DataDir, meta.XattrMeta{}, sumOpts)
			if err != nil {
				be.Shutdown()
			}
		}
	})
	if err != nil {
		running.Store(false)
		return nil, fmt.Errorf("open data dir %s: %w", cfg.DataDir, err)
	}

	h := newHook(cfg.Region, cfg.OnEvent, cfg.Logf)
	if len(cfg.EventBuckets) > 0 {
		h.buckets = map[string]bool{}
		for _, b := range cfg.EventBuckets {
			h.buckets[b] = true
		}
	}
	listening := make(chan struct{})
	var listenOnce sync.Once
	gwCfg := &embedgw.Config{
		RootUserAccess: cfg.AccessKey,
		RootUserSecret: cfg.SecretKey,
		Region:         cfg.Region,
		// Given explicitly: auth.New would pick the same single-account
		// service but announce it on stdout.
		IAMService: singleAccount{auth.NewIAMServiceSingle(auth.Account{
			Access: cfg.AccessKey,
			Secret: cfg.SecretKey,
			Role:   auth.RoleAdmin,
		})},
		Ports:             []string{cfg.Addr},
		MaxConnections:    maxConnections,
		MaxRequests:       maxRequests,
		MultipartMaxParts: multipartMaxParts,
		KeepAlive:         true,
		// Quiet drops both the start-up banner and the per-request log
		// lines, which would otherwise go to stdout.
		Quiet: true,
		S3Options: []s3api.Option{
			s3api.WithMiddleware("/", h.middleware),
			s3api.WithOnListen(func() { listenOnce.Do(func() { close(listening) }) }),
		},
	}

	gwCtx, cancel := context.WithCancel(ctx)
	s := &Server{cfg: cfg, cancel: cancel, done: make(chan struct{}), be: listingBackend{Posix: be, root: root}, sums: sums}
	go func() {
		err := embedgw.RunVersityGW(gwCtx, s.be, gwCfg)
		if err != nil {
			err = gatewayError(cfg.Addr, err)
			cfg.Logf("s3server: %v", err)
		}
		s.err = err
		sums.Shutdown()
		running.Store(false)
		close(s.done)
	}()

	select {
	case <-listening:
	case <-s.done:
		if s.err == nil {
			return nil, fmt.Errorf("s3 server on %s stopped while starting: %w", cfg.Addr, context.Cause(ctx))
		}
		return nil, s.err
	}

	client := NewClient(s.Endpoint(), cfg.AccessKey, cfg.SecretKey, cfg.Region)
	if err := ensureBuckets(ctx, client, append(append([]string(nil), cfg.Buckets...), cfg.Versioned...)); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := enableVersioning(ctx, client, cfg.Versioned); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// versionsDir returns the versioning directory to give the posix backend,
// creating it, or "" for a server without versioned buckets. Once it
// exists it is always given, even when Config.Versioned is empty: without
// it, the older versions of a bucket versioned before would be out of
// reach and the bucket would be overwritten in place.
func versionsDir(cfg Config) (string, error) {
	dir := cfg.VersionsDir()
	if len(cfg.Versioned) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return "", nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create versions dir: %w; choose a --data-dir whose parent you can write to", err)
	}
	if err := checkXattrs(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// withoutStdout runs fn with os.Stdout on the null device. Only for the
// start-up of the gateway, before the program prints anything of its own.
func withoutStdout(fn func()) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		fn()
		return
	}
	defer null.Close()
	stdout := os.Stdout
	os.Stdout = null
	defer func() { os.Stdout = stdout }()
	fn()
}

// Endpoint is the URL S3 clients use, e.g. "http://127.0.0.1:9000".
func (s *Server) Endpoint() string { return "http://" + s.cfg.Addr }

// Stop shuts the gateway down, waits until it has stopped and returns the
// error it stopped with, if any. It may be called more than once.
func (s *Server) Stop() error {
	s.stop.Do(s.cancel)
	<-s.done
	return s.err
}

// Done is closed when the gateway has stopped, after Stop or on a fatal
// error; Err then says why.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is the error the gateway stopped with: nil while it runs and after a
// clean Stop.
func (s *Server) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// xattrError is the one sentence a user reads when the data dir cannot hold
// metadata; the cause stays available to errors.Is.
type xattrError struct {
	dir   string
	cause error
}

func (e *xattrError) Error() string {
	return fmt.Sprintf("data dir %s is on a filesystem without user extended attributes (xattrs); choose a --data-dir on ext4, xfs or btrfs", e.dir)
}

func (e *xattrError) Unwrap() error { return e.cause }

// probeXattrs runs versitygw's own check, which only catches ENOTSUP on a
// read, then writes and removes one attribute, which catches filesystems
// that read fine but refuse to store.
func probeXattrs(dir string) error {
	x := meta.XattrMeta{}
	if err := x.Test(dir); err != nil {
		return &xattrError{dir: dir, cause: err}
	}
	const probe = "conveyor.probe"
	if err := x.StoreAttribute(nil, dir, "", probe, []byte("1")); err != nil {
		return &xattrError{dir: dir, cause: err}
	}
	if err := x.DeleteAttribute(dir, "", probe); err != nil {
		return &xattrError{dir: dir, cause: err}
	}
	return nil
}

// checkAddrFree binds addr and releases it at once, so that a port in use
// is reported before the gateway (of which there can be only one) starts.
func checkAddrFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return listenError(addr, err)
	}
	return ln.Close()
}

func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%s is already in use; stop the other program or choose another address with --s3-addr HOST:PORT", addr)
	}
	return fmt.Errorf("cannot listen on %s (%v); choose another address with --s3-addr HOST:PORT", addr, err)
}

// gatewayError turns what RunVersityGW returns into a sentence for the
// user: the port can still be taken between the check and the bind.
func gatewayError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") {
		return listenError(addr, err)
	}
	return fmt.Errorf("s3 server on %s: %w", addr, err)
}

// singleAccount is the gateway's single-account IAM service, except that an
// unknown access key is auth.ErrNoSuchUser, which the gateway answers with
// 403 InvalidAccessKeyId as S3 does; the plain service's "user not found"
// becomes a 404 that clients read as a missing bucket.
type singleAccount struct{ auth.IAMService }

func (s singleAccount) GetUserAccount(access string) (auth.Account, error) {
	acct, err := s.IAMService.GetUserAccount(access)
	if err != nil {
		return acct, auth.ErrNoSuchUser
	}
	return acct, nil
}
