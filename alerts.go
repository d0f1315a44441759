package pgkit

import (
	"context"
	"log/slog"
)

// defaultHandler forwards each record to slog.Default()'s handler as it is
// when the record is logged, so a program that calls slog.SetDefault after
// Open still gets pgkit's warnings, at their own level.
type defaultHandler struct{}

func (defaultHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return slog.Default().Handler().Enabled(ctx, l)
}

func (defaultHandler) Handle(ctx context.Context, r slog.Record) error {
	return slog.Default().Handler().Handle(ctx, r)
}

func (defaultHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return slog.Default().Handler().WithAttrs(attrs)
}

func (defaultHandler) WithGroup(name string) slog.Handler {
	return slog.Default().Handler().WithGroup(name)
}

// alertLogger is where warnings of refused or lost work go: logger, else
// slog.Default() at the time of logging.
func alertLogger(logger *slog.Logger) *slog.Logger {
	if logger != nil {
		return logger
	}
	return slog.New(defaultHandler{})
}
