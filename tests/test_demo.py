"""The main job's table: one row per model and input, bits per unit with its unit."""

from zoo.tools.demo import COLUMNS, format_table


def test_table_has_one_row_per_result_and_states_units():
    rows = [
        {"model": "a", "modality": "image", "bits_per_unit": 0.0156, "unit": "pixel", "quality": "PSNR 1 dB"},
        {"model": "b", "modality": "em_volume", "bits_per_unit": None, "quality": "VOI 1"},
        {"model": "c", "modality": "text", "bits_per_unit": "4.8 bits/byte", "quality": "lossless | exact"},
    ]
    lines = format_table(rows).splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |" and len(lines) == 2 + len(rows)
    assert "| 0.0156 bits/pixel |" in lines[2]
    assert "| n/a (continuous tokens) |" in lines[3]
    assert "| 4.8 bits/byte |" in lines[4] and "lossless \\| exact" in lines[4]
