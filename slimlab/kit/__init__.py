"""What stage authors import: training, model surgery, export, parity, distillation and coding."""
