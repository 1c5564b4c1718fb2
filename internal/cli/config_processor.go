package cli

import (
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/conveyorhq/conveyor/internal/processor"
)

// sizeSetting is processor.limits.memory: a size like 512MiB or 2GiB, or
// a byte count (processor.ParseSize).
type sizeSetting int64

// UnmarshalYAML reads the size.
func (s *sizeSetting) UnmarshalYAML(n *yaml.Node) error {
	return s.set("processor.limits.memory: ", n.Value)
}

func (s *sizeSetting) set(field, v string) error {
	n, err := processor.ParseSize(v)
	if err != nil {
		return usageErrorf("%s%v", field, err)
	}
	*s = sizeSetting(n)
	return nil
}

// processorHide lists what the processor's sandbox must not show although
// it may lie in a directory the sandbox binds (a configuration or data dir
// under /etc or /opt, beside the processor): the configuration file, the
// data dir and volume (credentials, other jobs' files), and the worker
// user's AWS and Conveyor configuration.
func (c FileConfig) processorHide() []string {
	paths := []string{c.DataDir, c.source, c.Volume}
	if home, err := os.UserHomeDir(); err == nil {
		paths = append(paths, filepath.Join(home, ".aws"), filepath.Join(home, ".config", "conveyor"))
	}
	var hide []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		// Made absolute here too: the data dir is until start-up.
		if abs, err := filepath.Abs(p); err == nil {
			hide = append(hide, abs)
		}
	}
	return hide
}

// processorLimits maps processor.limits onto the processor's.
func (c FileConfig) processorLimits() processor.Limits {
	l := c.Processor.Limits
	return processor.Limits{Memory: int64(l.Memory), CPUTime: l.CPUTime, OpenFiles: l.OpenFiles, Processes: l.Processes}
}
