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

// withFlagNames rewrites an engine.FieldError in err (which names a
// request field, "width 1001: ...") to name the field's flag instead
// ("--width 1001: ..."). Errors without one are returned as they are.
func withFlagNames(err error) error {
	var fe *engine.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	field, ok := engine.FieldByName(fe.Field)
	if !ok || field.Flag == "" {
		return err
	}
	msg := strings.Replace(err.Error(), fe.Error(), fe.Describe("--"+field.Flag), 1)
	return &renamedError{msg: msg, err: err}
}

// renamedError is err with another message.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }
