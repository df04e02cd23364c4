#pragma once
// The text side of CLIP: tokenizer (with its text cleaning), text tower, CLIP model loading/saving and
// embed_text, zero-shot taxonomy evaluation. Loading OpenAI's TorchScript .pt files: taxon/text/clip_pt.hpp.
#include "taxon/text/unicode.hpp"
#include "taxon/text/clean.hpp"
#include "taxon/text/tokenizer.hpp"
#include "taxon/text/text_tower.hpp"
#include "taxon/text/clip.hpp"
#include "taxon/text/zero_shot.hpp"
