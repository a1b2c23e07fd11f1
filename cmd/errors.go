package cmd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/darkroom-ai/darkroom/engine"
)

// FormatError renders err as the single line darkroom prints on failure:
// "darkroom: <message>". Line breaks inside the message are folded into
// "; " so that scripts can rely on exactly one line.
func FormatError(err error) string {
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		err = fmt.Errorf("--%s %v: %s", strings.ReplaceAll(fe.Field, "_", "-"), fe.Value, fe.Msg)
	}
	msg := strings.TrimSpace(err.Error())
	if strings.ContainsAny(msg, "\r\n") {
		lines := strings.FieldsFunc(msg, func(r rune) bool { return r == '\n' || r == '\r' })
		for i := range lines {
			lines[i] = strings.TrimSpace(lines[i])
		}
		msg = strings.Join(lines, "; ")
	}
	if msg == "" {
		msg = "unknown error"
	}
	return "darkroom: " + msg
}

// exactArgs is cobra.ExactArgs with a message that names the missing
// arguments and points to the command's help.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s needs %s, got %d argument(s) (see '%s --help')", cmd.CommandPath(), names, len(args), cmd.CommandPath())
		}
		return nil
	}
}

// noSubcommand rejects arguments to a command that only has subcommands.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q (see '%s --help')", args[0], cmd.CommandPath())
	}
	return nil
}

// flagError adds a pointer to the help to flag parsing errors.
func flagError(cmd *cobra.Command, err error) error {
	return fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())
}
