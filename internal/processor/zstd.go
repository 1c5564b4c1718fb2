package processor

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
)

// maxBaseName bounds the name derived from an object key, well under the
// 255-byte file name limit of common filesystems once ".zst" is added.
const maxBaseName = 200

// runZstd compresses the input into <base name of key>.zst in the output
// directory, streaming.
func runZstd(ctx context.Context, env Env, log io.Writer) (err error) {
	if err := checkAbs("Input", env.Input); err != nil {
		return err
	}
	if err := checkAbs("OutputDir", env.OutputDir); err != nil {
		return err
	}
	in, err := os.Open(env.Input)
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer in.Close()

	name := safeBaseName(env.InputKey) + ".zst"
	outPath := filepath.Join(env.OutputDir, name)
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close output: %w", cerr)
		}
		if err != nil {
			// A partial file must not be mistaken for a result.
			os.Remove(outPath)
		}
	}()

	enc, err := zstd.NewWriter(out,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("zstd encoder: %w", err)
	}
	n, err := io.CopyBuffer(enc, ctxReader{ctx, in}, make([]byte, copyBufSize))
	if err != nil {
		enc.Close()
		return fmt.Errorf("compress: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	fi, err := out.Stat()
	if err != nil {
		return fmt.Errorf("stat output: %w", err)
	}
	fmt.Fprintf(log, "zstd: compressed %d bytes into %s (%d bytes)\n", n, name, fi.Size())
	return nil
}

// safeBaseName derives a file name from an untrusted object key: the last
// path element, with control characters and invalid UTF-8 replaced by "_",
// at most maxBaseName bytes. It never contains "/" and is never empty, "."
// or ".."; when nothing usable is left it is "input".
func safeBaseName(key string) string {
	base := path.Base(strings.TrimRight(key, "/"))
	base = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, strings.ToValidUTF8(base, "_"))
	if len(base) > maxBaseName {
		base = truncateName(base, maxBaseName)
	}
	switch base {
	case "", ".", "..":
		return "input"
	}
	return base
}

// truncateName shortens name to at most n bytes on a rune boundary, keeping a
// short extension so the content type can still be guessed from it.
func truncateName(name string, n int) string {
	ext := path.Ext(name)
	if len(ext) > 16 || strings.ContainsRune(ext, utf8.RuneError) {
		ext = ""
	}
	stem := name[:len(name)-len(ext)]
	limit := n - len(ext)
	for limit > 0 && !utf8.RuneStart(stem[limit]) {
		limit--
	}
	return stem[:limit] + ext
}
