module causality.dev/sdk

go 1.26

require causality.dev/api v0.0.0

replace causality.dev/api => ../api
