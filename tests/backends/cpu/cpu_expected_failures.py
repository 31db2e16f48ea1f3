"""ONNX node cases that pass on the interpreter but not natively on target="cpu", each with its reason.

tests/backends/cpu/test_cpu_node_cases.py runs every node case on the CPU target (no fallback);
a case listed here must still fail (strict xfail). Issue 4 caps this list at 5% of the cases the
interpreter passes. Generated from a run, then grouped by reason."""
from __future__ import annotations

_DFT_F32_NOISE = ("ONNX's expected data carries float32 FFT rounding (1.9e-7 where the exact value is 0) "
                  "beyond the case's atol 1e-7; the native dense DFT accumulates in float64 and is exact "
                  "there (ONNX specifies no intermediate precision for DFT, so this is not a kernel bug)")
_DYNAMIC = ('output shape known only at run time (nonzero, unique, compress, non_max_suppression, image '
            'decoding, loops with a run-time trip count, if branches of different shapes): the CPU runtime '
            'allocates every buffer from static shapes before running kernels')
_STRINGS = ('string tensors: the kernel IR has numeric dtypes only')
_SUBGRAPHS = ('if is not compiled natively: a kernel binds only its node\'s own inputs, while a branch reads '
              'values of the enclosing graph computed at run time (test_if: the condition itself is a run-time '
              'input). Scan bodies, which read only their own inputs and known values, are lowered '
              '(backends/lower_scan.py)')

CPU_EXPECTED_FAILURES: dict[str, str] = {
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
}
