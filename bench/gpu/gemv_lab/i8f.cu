// s38 (issue 17, batched products; decision 157): the runtime's swapped int8 rows kernel now
// reads x's planes in the mma's fragment order (packed/mma.cu: mma_split_i8 with frag = 1, one
// 16-byte load per mma's A registers; s38's SASS of the previous body held ~3 register moves
// per IMMA). The runtime's mma_i8x_g* are that body at (warps, blocks per SM) = (8, 2), (12, 1),
// (8, 1); these are the same template at other warp counts, for the lab's comparison (lab2 and
// lab3 ran it as it was then; since lab5 the template also has lab4's i8y_sp changes). s37's
// bodies on the previous plane order are i8x.cu's i8x_g8s4, i8xw12_g16s4 and i8x_g32s4.
// Lab only: timing and the output check.
MMA_I8X_KERNEL(i8f_g8w12, 1, 12, 1)
MMA_I8X_KERNEL(i8f_g8w16, 1, 16, 1)
MMA_I8X_KERNEL(i8f_g16w8, 2, 8, 1)
MMA_I8X_KERNEL(i8f_g16w16, 2, 16, 1)
MMA_I8X_KERNEL(i8f_g32w12, 4, 12, 1)
