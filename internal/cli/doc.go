// Package cli is the conveyor command line: one file per command
// (cmd_<verb>.go), the configuration (YAML file, CONVEYOR_* environment
// variables, flags, in that order of precedence from lowest to highest)
// mapped onto each component's Config, and the one function that turns an
// error into what a person reads and the exit code.
package cli
