// Package browser starts headless Chromium for the dashboard's browser
// tests and screenshots. It is never linked into the conveyor binary.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/chromedp/chromedp"
)

// ErrNoChromium is returned by Start when no Chromium is installed.
var ErrNoChromium = errors.New("chromium not found (install it with: apt-get install -y chromium; or set CHROMIUM=/path/to/chromium)")

// Path returns the Chromium executable: $CHROMIUM, /usr/bin/chromium, or
// chromium / chromium-browser on PATH.
func Path() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if found, err := exec.LookPath(p); err == nil {
			return found, nil
		}
	}
	return "", ErrNoChromium
}

// Start launches headless Chromium with a fresh profile in userDataDir and
// returns a chromedp context for one tab, and the function that closes it
// all. The flags suit a root user in a container, with no network of its
// own beyond the pages it is pointed at.
func Start(ctx context.Context, userDataDir string, width, height int) (context.Context, context.CancelFunc, error) {
	exe, err := Path()
	if err != nil {
		return nil, nil, err
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(userDataDir),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // root in a container
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(width, height),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tctx, cancelTab := chromedp.NewContext(actx)
	// Run nothing: this starts the browser, so a broken install fails here.
	if err := chromedp.Do(tctx); err != nil {
		cancelTab()
		cancelAlloc()
		return nil, nil, fmt.Errorf("start %s: %w", exe, err)
	}
	return tctx, func() { cancelTab(); cancelAlloc() }, nil
}
