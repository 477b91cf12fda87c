"""Networks: plain nn.Modules (encoders, decoders, heads, readouts)."""
