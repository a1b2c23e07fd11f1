//go:build !unix

package termimg

import (
	"errors"
	"os"
	"time"
)

// QuerySixel is not supported off Unix; it always reports an error.
func QuerySixel(timeout time.Duration) (bool, error) {
	return false, errors.New("query sixel: not supported on this system")
}

// QuerySixelOn is not supported off Unix; it always reports an error.
func QuerySixelOn(tty *os.File, timeout time.Duration) (bool, error) {
	return false, errors.New("query sixel: not supported on this system")
}
