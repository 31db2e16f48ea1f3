"""ONNX node cases that pass on the interpreter but not natively on target="cpu", each with its reason.

tests/backends/cpu/test_cpu_node_cases.py runs every node case on the CPU target (no fallback);
a case listed here must still fail (strict xfail). Issue 4 caps this list at 5% of the cases the
interpreter passes. Generated from a run, then grouped by reason."""
from __future__ import annotations

_BF16_ATTN = ("bfloat16 causal attention: 21 of 192 outputs one bf16 step (0.0078) off ONNX's data, "
              "beyond rtol 1e-3; the kernels keep softmax/matmul intermediates in float32 where ONNX's "
              "data rounds to bfloat16 (the interpreter's reference happens to round like ONNX)")
_DFT_F32_NOISE = ("ONNX's expected data carries float32 FFT rounding (1.9e-7 where the exact value is 0) "
                  "beyond the case's atol 1e-7; the native dense DFT accumulates in float64 and is exact "
                  'there')
_DYNAMIC = ('output shape known only at run time (nonzero, unique, compress, non_max_suppression, '
            'loops): the CPU runtime allocates every buffer from static shapes before running kernels')
_E8M0 = ('float8e8m0 (scale-only, exponent-only type) has no kernel-IR dtype')
_RANDOM = ('training-mode dropout draws random numbers; random ops stay on the reference')
_ROI_ALIGN = ('roi_align with sampling_ratio 0 samples ceil(roi size / bins) points per bin, a count read'
              ' from the rois at run time; kernel-IR loops have compile-time extents (needs a bounded '
              'loop with a run-time guard; planned)')
_RUNTIME_MASK = ('attention with a run-time attn_mask shorter than the keys: its decomposition needs the '
                 'mask padded at compile time; no native attention template yet')
_STRINGS = ('string tensors: the kernel IR has numeric dtypes only')
_SUBGRAPHS = ('control flow (if/loop/scan bodies) is not compiled natively: the kernel IR has no nested-'
              'graph call')
_TODO_MISC = ('no native lowering yet (det: pivoting LU; tree_ensemble: tree walk; tensor_scatter)')
_TODO_SAMPLING = ('deform_conv/col2im/max_unpool have no native lowering yet (gathers at offsets / '
                  'overlapping scatter-adds; planned)')
_TODO_SIGNAL = ('stft has no native lowering yet (framed dft; planned)')

CPU_EXPECTED_FAILURES: dict[str, str] = {
    # --- bf16_attn ---
    "test_attention_3d_causal_bf16": _BF16_ATTN,
    "test_attention_4d_causal_bf16": _BF16_ATTN,
    # --- dft_f32_noise ---
    "test_dft_inverse": _DFT_F32_NOISE,
    "test_dft_inverse_opset19": _DFT_F32_NOISE,
    # --- dynamic ---
    "test_affine_grid_3d_align_corners_expanded": _DYNAMIC,
    "test_compress_0": _DYNAMIC,
    "test_compress_1": _DYNAMIC,
    "test_compress_bfloat16": _DYNAMIC,
    "test_compress_default_axis": _DYNAMIC,
    "test_compress_negative_axis": _DYNAMIC,
    "test_image_decoder_decode_bmp_rgb": _DYNAMIC,
    "test_image_decoder_decode_png_rgb": _DYNAMIC,
    "test_image_decoder_decode_pnm_rgb": _DYNAMIC,
    "test_image_decoder_decode_tiff_rgb": _DYNAMIC,
    "test_loop11": _DYNAMIC,
    "test_nonmaxsuppression_center_point_box_format": _DYNAMIC,
    "test_nonmaxsuppression_flipped_coordinates": _DYNAMIC,
    "test_nonmaxsuppression_identical_boxes": _DYNAMIC,
    "test_nonmaxsuppression_iou_threshold_boundary": _DYNAMIC,
    "test_nonmaxsuppression_limit_output_size": _DYNAMIC,
    "test_nonmaxsuppression_single_box": _DYNAMIC,
    "test_nonmaxsuppression_suppress_by_IOU": _DYNAMIC,
    "test_nonmaxsuppression_suppress_by_IOU_and_scores": _DYNAMIC,
    "test_nonmaxsuppression_two_batches": _DYNAMIC,
    "test_nonmaxsuppression_two_classes": _DYNAMIC,
    "test_nonzero_example": _DYNAMIC,
    "test_range_bfloat16_type_positive_delta_expanded": _DYNAMIC,
    "test_range_float16_type_positive_delta_expanded": _DYNAMIC,
    "test_range_float_type_positive_delta_expanded": _DYNAMIC,
    "test_range_int32_type_negative_delta_expanded": _DYNAMIC,
    "test_unique_bfloat16_sorted_without_axis": _DYNAMIC,
    "test_unique_length_1": _DYNAMIC,
    "test_unique_not_sorted_without_axis": _DYNAMIC,
    "test_unique_sorted_with_axis": _DYNAMIC,
    "test_unique_sorted_with_axis_3d": _DYNAMIC,
    "test_unique_sorted_with_negative_axis": _DYNAMIC,
    "test_unique_sorted_without_axis": _DYNAMIC,
    # --- e8m0 ---
    "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0": _E8M0,
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT": _E8M0,
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16": _E8M0,
    "test_cast_e8m0_FLOAT_to_FLOAT8E8M0": _E8M0,
    # --- random ---
    "test_training_dropout_zero_ratio": _RANDOM,
    "test_training_dropout_zero_ratio_mask": _RANDOM,
    # --- roi_align ---
    "test_roialign_aligned_false": _ROI_ALIGN,
    "test_roialign_aligned_true": _ROI_ALIGN,
    "test_roialign_mode_max": _ROI_ALIGN,
    # --- runtime_mask ---
    "test_attention_4d_causal_padded_kv_bf16": _RUNTIME_MASK,
    "test_attention_4d_diff_heads_mask4d_padded_kv": _RUNTIME_MASK,
    "test_attention_4d_padded_kv_bf16": _RUNTIME_MASK,
    # --- strings ---
    "test_ai_onnx_ml_label_encoder_string_int": _STRINGS,
    "test_ai_onnx_ml_label_encoder_string_int_no_default": _STRINGS,
    "test_ai_onnx_ml_label_encoder_tensor_mapping": _STRINGS,
    "test_ai_onnx_ml_label_encoder_tensor_value_only_mapping": _STRINGS,
    "test_equal_string": _STRINGS,
    "test_equal_string_broadcast": _STRINGS,
    "test_regex_full_match_basic": _STRINGS,
    "test_regex_full_match_email_domain": _STRINGS,
    "test_regex_full_match_empty": _STRINGS,
    "test_string_concat": _STRINGS,
    "test_string_concat_broadcasting": _STRINGS,
    "test_string_concat_empty_string": _STRINGS,
    "test_string_concat_utf8": _STRINGS,
    "test_string_concat_zero_dimensional": _STRINGS,
    "test_string_split_basic": _STRINGS,
    "test_string_split_consecutive_delimiters": _STRINGS,
    "test_string_split_empty_string_delimiter": _STRINGS,
    "test_string_split_empty_tensor": _STRINGS,
    "test_string_split_maxsplit": _STRINGS,
    "test_string_split_no_delimiter": _STRINGS,
    "test_strnormalizer_export_monday_casesensintive_lower": _STRINGS,
    "test_strnormalizer_export_monday_casesensintive_nochangecase": _STRINGS,
    "test_strnormalizer_export_monday_casesensintive_upper": _STRINGS,
    "test_strnormalizer_export_monday_empty_output": _STRINGS,
    "test_strnormalizer_export_monday_insensintive_upper_twodim": _STRINGS,
    "test_strnormalizer_nostopwords_nochangecase": _STRINGS,
    "test_tfidfvectorizer_tf_batch_onlybigrams_skip0": _STRINGS,
    "test_tfidfvectorizer_tf_batch_onlybigrams_skip5": _STRINGS,
    "test_tfidfvectorizer_tf_batch_uniandbigrams_skip5": _STRINGS,
    "test_tfidfvectorizer_tf_only_bigrams_skip0": _STRINGS,
    "test_tfidfvectorizer_tf_onlybigrams_levelempty": _STRINGS,
    "test_tfidfvectorizer_tf_onlybigrams_skip5": _STRINGS,
    "test_tfidfvectorizer_tf_uniandbigrams_skip5": _STRINGS,
    # --- subgraphs ---
    "test_affine_grid_2d_align_corners_expanded": _SUBGRAPHS,
    "test_if": _SUBGRAPHS,
    "test_linear_attention_decode_step_expanded": _SUBGRAPHS,
    "test_linear_attention_delta_expanded": _SUBGRAPHS,
    "test_linear_attention_explicit_scale_expanded": _SUBGRAPHS,
    "test_linear_attention_fp16_expanded": _SUBGRAPHS,
    "test_linear_attention_gated_delta_beta_scalar_expanded": _SUBGRAPHS,
    "test_linear_attention_gated_delta_expanded": _SUBGRAPHS,
    "test_linear_attention_gated_delta_gqa_expanded": _SUBGRAPHS,
    "test_linear_attention_gated_delta_mqa_expanded": _SUBGRAPHS,
    "test_linear_attention_gated_expanded": _SUBGRAPHS,
    "test_linear_attention_gated_per_head_decay_expanded": _SUBGRAPHS,
    "test_linear_attention_linear_expanded": _SUBGRAPHS,
    "test_linear_attention_linear_t1_no_past_expanded": _SUBGRAPHS,
    "test_linear_attention_no_past_explicit_zeros_expanded": _SUBGRAPHS,
    "test_linear_attention_prefill_with_past_expanded": _SUBGRAPHS,
    "test_scan9_multi_state": _SUBGRAPHS,
    "test_scan9_scalar": _SUBGRAPHS,
    "test_scan9_sum": _SUBGRAPHS,
    "test_scan_sum": _SUBGRAPHS,
    # --- todo_misc ---
    "test_ai_onnx_ml_tree_ensemble_set_membership": _TODO_MISC,
    "test_ai_onnx_ml_tree_ensemble_single_tree": _TODO_MISC,
    "test_det_2d": _TODO_MISC,
    "test_det_nd": _TODO_MISC,
    "test_tensorscatter": _TODO_MISC,
    "test_tensorscatter_3d": _TODO_MISC,
    "test_tensorscatter_circular": _TODO_MISC,
    # --- todo_sampling ---
    "test_basic_deform_conv_with_padding": _TODO_SAMPLING,
    "test_basic_deform_conv_without_padding": _TODO_SAMPLING,
    "test_col2im": _TODO_SAMPLING,
    "test_col2im_5d": _TODO_SAMPLING,
    "test_col2im_dilations": _TODO_SAMPLING,
    "test_col2im_pads": _TODO_SAMPLING,
    "test_col2im_strides": _TODO_SAMPLING,
    "test_deform_conv_with_mask_bias": _TODO_SAMPLING,
    "test_deform_conv_with_multiple_offset_groups": _TODO_SAMPLING,
    "test_maxunpool_export_with_output_shape": _TODO_SAMPLING,
    "test_maxunpool_export_without_output_shape": _TODO_SAMPLING,
    # --- todo_signal ---
    "test_stft": _TODO_SIGNAL,
    "test_stft_with_window": _TODO_SIGNAL,
}
