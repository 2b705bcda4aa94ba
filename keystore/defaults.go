package keystore

import "time"

// orDefault sets *v, an option, to d unless it is positive.
func orDefault[T int | int64 | float64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
