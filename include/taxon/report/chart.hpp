#pragma once
// Charts for the run report, drawn as inline SVG by this header: line charts (training curves) and grouped bar
// charts (accuracy per rank and taxa group, Recall@K / MAP@R, cluster sizes, purity, stage timings).
//
// Why SVG written here rather than an inlined charting library (Debian's libjs-chart.js 3.9, libjs-d3, vega):
// the report must open from disk years later, in any browser, printed, or with JavaScript off. Inline SVG needs no
// script, no library file found at run time (a report written where the package is missing would lose its charts),
// adds a few kB instead of ~200 kB per report, and is plain text a unit test can check value by value. What a
// library adds (animation, zoom) a run report does not need; hovering a bar or point still shows its value (SVG
// <title>). Colours are the Okabe-Ito palette, which stays distinguishable with the common colour-vision deficiencies.
#include "taxon/report/html.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace taxon::report {

namespace palette {
inline constexpr const char* blue = "#0072B2";
inline constexpr const char* orange = "#E69F00";
inline constexpr const char* green = "#009E73";
inline constexpr const char* purple = "#CC79A7";
inline constexpr const char* vermillion = "#D55E00";
inline constexpr const char* sky = "#56B4E9";
inline constexpr const char* grey = "#8C8C8C";
inline constexpr const char* black = "#333333";
// In order of use for series without a colour of their own.
inline const std::vector<std::string>& cycle() {
  static const std::vector<std::string> c = {blue, orange, green, purple, vermillion, sky, black, grey};
  return c;
}
}  // namespace palette

// An axis: its label says what is plotted and in which unit, e.g. "loss", "images / s", "accuracy (%)".
struct Axis {
  std::string label;
  bool percent = false;  // values are fractions, ticks print 0%..100%
  double min = std::numeric_limits<double>::quiet_NaN();  // fixed ends (NaN: from the data)
  double max = std::numeric_limits<double>::quiet_NaN();
  bool log_scale = false;  // base 10; only positive values are drawn
};

struct LineSeries {
  std::string name, color;
  std::vector<double> x, y;  // NaN y breaks the line
};

// A labelled vertical rule, e.g. where round 1 starts.
struct Marker {
  double x = 0;
  std::string label;
};

struct LineChart {
  std::string id, title, caption;
  Axis x, y;
  std::vector<LineSeries> series;
  std::vector<Marker> markers;
  int width = 540, height = 300;
  size_t max_points = 600;  // longer series are averaged in equal buckets (the caption says so)
};

struct BarSeries {
  std::string name, color;
  std::vector<double> values;  // one per category; NaN draws "n/a"
};

struct BarChart {
  std::string id, title, caption;
  std::vector<std::string> categories;
  Axis category_axis, value_axis;
  std::vector<BarSeries> series;
  bool horizontal = false;  // categories down the side (long names such as stage names)
  bool value_labels = true;  // print each bar's value when there is room
  std::string value_suffix;  // appended to value labels, e.g. " s"
  bool skip_zero = false;    // draw nothing for 0 (histograms: an empty bin is no bar)
  int width = 540, height = 300;  // horizontal charts grow with the number of categories
};

namespace chart_detail {

inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// Rough width of text in the report's 12 px sans-serif (DejaVu Sans averages ~0.6 em per character).
inline double text_width(const std::string& s, double font_px = 12) {
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;  // count UTF-8 code points, not bytes
  return static_cast<double>(chars) * font_px * 0.6;
}

inline std::string shorten(const std::string& s, size_t max_chars) {
  size_t chars = 0, cut = s.size();
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (++chars == max_chars) cut = i;
  }
  return chars <= max_chars ? s : s.substr(0, cut) + "\u2026";
}

struct Ticks {
  double lo = 0, hi = 1, step = 0.2;
  std::vector<double> values;
};

// Round ends and a 1/2/2.5/5 x 10^k step giving about `target` intervals.
inline Ticks nice_ticks(double lo, double hi, int target = 5) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag * 10;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  Ticks t;
  t.step = step;
  t.lo = std::floor(lo / step + 1e-9) * step;
  t.hi = std::ceil(hi / step - 1e-9) * step;
  for (double v = t.lo; v <= t.hi + step * 1e-6; v += step) t.values.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

// Tick label with as many decimals as the step needs; tiny or huge values in compact exponent form ("2e-4").
inline std::string tick_label(double v, double step, bool percent) {
  if (percent) v *= 100, step *= 100;
  char buf[48];
  if (v != 0 && (std::abs(step) < 1e-3 || std::abs(v) >= 1e6)) {
    const int exponent = static_cast<int>(std::floor(std::log10(std::abs(v)) + 1e-9));
    std::snprintf(buf, sizeof buf, "%.2ge%d", v / std::pow(10.0, exponent), exponent);
    return std::string(buf) + (percent ? "%" : "");
  }
  int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  if (std::abs(step * std::pow(10.0, decimals) - std::round(step * std::pow(10.0, decimals))) > 1e-6) ++decimals;  // 2.5 steps
  std::snprintf(buf, sizeof buf, "%.*f", std::min(decimals, 6), v);
  return std::string(buf) + (percent ? "%" : "");
}

struct LegendItem {
  std::string name, color;
  bool line = false;
};

// Legend entries left to right, wrapping at `width`; returns the markup and the height used.
inline std::pair<std::string, double> legend(const std::vector<LegendItem>& items, double x0, double y0, double width) {
  std::string out = "<g class=\"legend\">";
  double x = x0, y = y0 + 12;
  for (const auto& it : items) {
    const double w = 18 + text_width(it.name) + 16;
    if (x > x0 && x + w > x0 + width) x = x0, y += 18;
    if (it.line)
      out += "<line x1=\"" + num(x) + "\" y1=\"" + num(y - 4) + "\" x2=\"" + num(x + 14) + "\" y2=\"" + num(y - 4) +
             "\" stroke=\"" + escape(it.color) + "\" stroke-width=\"3\"/>";
    else
      out += "<rect x=\"" + num(x) + "\" y=\"" + num(y - 10) + "\" width=\"12\" height=\"12\" rx=\"2\" fill=\"" +
             escape(it.color) + "\"/>";
    out += "<text x=\"" + num(x + 18) + "\" y=\"" + num(y) + "\">" + escape(it.name) + "</text>";
    x += w;
  }
  return {out + "</g>", y - y0 + 8};
}

inline double legend_height(const std::vector<LegendItem>& items, double width) {
  return legend(items, 0, 0, width).second;
}

// A label along the y axis, on two lines when one would not fit along `room` pixels (bold 12 px).
inline std::vector<std::string> vertical_label_lines(const std::string& label, double room) {
  if (text_width(label, 13) <= room) return {label};
  size_t best = std::string::npos;
  for (size_t i = label.find(' '); i != std::string::npos; i = label.find(' ', i + 1))
    if (best == std::string::npos || std::abs(static_cast<double>(i) - label.size() / 2.0) < std::abs(static_cast<double>(best) - label.size() / 2.0)) best = i;
  if (best == std::string::npos) return {label};
  return {label.substr(0, best), label.substr(best + 1)};
}

inline std::string vertical_label(const std::vector<std::string>& lines, double center_y) {
  std::string s = "<text class=\"axis-label\" transform=\"translate(13," + num(center_y) + ") rotate(-90)\" text-anchor=\"middle\">";
  for (size_t i = 0; i < lines.size(); ++i)
    s += "<tspan x=\"0\" dy=\"" + std::string(i == 0 ? "0" : "1.25em") + "\">" + escape(lines[i]) + "</tspan>";
  return s + "</text>";
}

// Tick labels of a log axis (values are exponents): plain decimals within 0.01..1000, else all as "1e-5".
inline std::vector<std::string> log_tick_labels(const std::vector<double>& exponents, bool percent) {
  bool plain = true;
  for (double e : exponents) plain = plain && e >= -2 && e <= 3;
  std::vector<std::string> out;
  for (double e : exponents) {
    char buf[32];
    if (plain) std::snprintf(buf, sizeof buf, "%.*f", e < 0 ? static_cast<int>(-e) : 0, std::pow(10.0, e));
    else std::snprintf(buf, sizeof buf, "1e%d", static_cast<int>(std::lround(e)));
    out.push_back(std::string(buf) + (percent ? "%" : ""));
  }
  return out;
}

struct Scale {
  double d0, d1, r0, r1;
  bool log = false;
  double operator()(double v) const {
    if (log) v = std::log10(v);
    return r0 + (v - d0) / (d1 - d0) * (r1 - r0);
  }
};

inline std::string svg_open(int width, double height, const std::string& title) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + std::to_string(width) + " " +
         num(height) + "\" width=\"" + std::to_string(width) + "\" height=\"" + num(height) +
         "\" role=\"img\" aria-label=\"" + escape(title) + "\">";
}

// Bucket means of (x, y) pairs, NaN y values kept as gaps: a long curve keeps its shape in `max_points` points.
inline void decimate(const std::vector<double>& x, const std::vector<double>& y, size_t max_points,
                     std::vector<double>& ox, std::vector<double>& oy) {
  const size_t n = std::min(x.size(), y.size());
  if (n <= max_points || max_points < 2) {
    ox.assign(x.begin(), x.begin() + static_cast<long>(n));
    oy.assign(y.begin(), y.begin() + static_cast<long>(n));
    return;
  }
  ox.clear(), oy.clear();
  const double per = static_cast<double>(n) / static_cast<double>(max_points);
  for (size_t b = 0; b < max_points; ++b) {
    const size_t lo = static_cast<size_t>(std::floor(b * per)), hi = std::min(n, static_cast<size_t>(std::floor((b + 1) * per)));
    double sx = 0, sy = 0;
    size_t finite = 0;
    for (size_t i = lo; i < hi; ++i)
      if (std::isfinite(y[i])) sx += x[i], sy += y[i], ++finite;
    if (finite == 0) {
      ox.push_back(x[lo]);
      oy.push_back(std::numeric_limits<double>::quiet_NaN());
    } else {
      ox.push_back(sx / static_cast<double>(finite));
      oy.push_back(sy / static_cast<double>(finite));
    }
  }
}

// The rendered chart plus what the browser test checks: how many data marks it drew.
struct Rendered {
  std::string svg;
  int marks = 0;
};

}  // namespace chart_detail

inline chart_detail::Rendered render(const LineChart& c) {
  using namespace chart_detail;
  Rendered out;
  std::vector<LegendItem> items;
  for (size_t i = 0; i < c.series.size(); ++i)
    items.push_back({c.series[i].name, c.series[i].color.empty() ? palette::cycle()[i % palette::cycle().size()] : c.series[i].color, true});

  // Data ranges (finite points only; log axes positive only).
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  std::vector<std::vector<double>> xs(c.series.size()), ys(c.series.size());
  for (size_t s = 0; s < c.series.size(); ++s) {
    decimate(c.series[s].x, c.series[s].y, c.max_points, xs[s], ys[s]);
    for (size_t i = 0; i < xs[s].size(); ++i) {
      if (!std::isfinite(ys[s][i]) || !std::isfinite(xs[s][i]) || (c.y.log_scale && ys[s][i] <= 0)) continue;
      x0 = std::min(x0, xs[s][i]), x1 = std::max(x1, xs[s][i]);
      y0 = std::min(y0, ys[s][i]), y1 = std::max(y1, ys[s][i]);
    }
  }
  for (const auto& m : c.markers) x0 = std::min(x0, m.x), x1 = std::max(x1, m.x);
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (!std::isfinite(y0)) y0 = c.y.log_scale ? 1 : 0, y1 = c.y.log_scale ? 10 : 1;
  if (std::isfinite(c.x.min)) x0 = c.x.min;
  if (std::isfinite(c.x.max)) x1 = c.x.max;
  if (std::isfinite(c.y.min) && (!c.y.log_scale || c.y.min > 0)) y0 = c.y.min;
  if (std::isfinite(c.y.max) && (!c.y.log_scale || c.y.max > 0)) y1 = c.y.max;
  if (c.y.log_scale) y0 = std::log10(y0), y1 = std::log10(y1);
  const Ticks xt = nice_ticks(x0, x1, 6);
  Ticks yt = nice_ticks(y0, y1, 5);
  if (c.y.log_scale) {  // decades
    yt.values.clear();
    yt.lo = std::floor(y0), yt.hi = std::max(std::ceil(y1), yt.lo + 1), yt.step = 1;
    for (double v = yt.lo; v <= yt.hi + 1e-9; v += 1) yt.values.push_back(v);
  }
  const auto log_labels = log_tick_labels(yt.values, c.y.percent);
  const auto ylabel = [&](double v) {
    if (!c.y.log_scale) return tick_label(v, yt.step, c.y.percent);
    const auto it = std::find(yt.values.begin(), yt.values.end(), v);
    return log_labels[static_cast<size_t>(it - yt.values.begin())];
  };
  double ytw = 0;
  for (double v : yt.values) ytw = std::max(ytw, text_width(ylabel(v), 11));
  const auto ylines = vertical_label_lines(c.y.label, c.height - 110);

  const double left = 26 + 15 * static_cast<double>(ylines.size() - 1) + ytw + 8, right = 18;
  const double plot_w = c.width - left - right;
  const double top = legend_height(items, c.width - left - right) + 10, bottom = 44;
  const double height = std::max<double>(c.height, top + bottom + 120);
  const double plot_h = height - top - bottom;
  const Scale sx{xt.lo, xt.hi, left, left + plot_w};
  const Scale sy{yt.lo, yt.hi, top + plot_h, top};

  std::string s = svg_open(c.width, height, c.title);
  s += "<g class=\"grid\">";
  for (double v : yt.values)
    s += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + plot_w) + "\" y1=\"" + num(sy(v)) + "\" y2=\"" + num(sy(v)) + "\"/>";
  s += "</g><g class=\"axis\">";
  s += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + plot_w) + "\" y1=\"" + num(top + plot_h) + "\" y2=\"" + num(top + plot_h) + "\"/>";
  s += "<line x1=\"" + num(left) + "\" x2=\"" + num(left) + "\" y1=\"" + num(top) + "\" y2=\"" + num(top + plot_h) + "\"/>";
  for (double v : yt.values)
    s += "<text class=\"tick\" x=\"" + num(left - 6) + "\" y=\"" + num(sy(v) + 4) + "\" text-anchor=\"end\">" + escape(ylabel(v)) + "</text>";
  double last_right = -1e9;
  for (double v : xt.values) {
    const std::string t = tick_label(v, xt.step, c.x.percent);
    const double px = sx(v), w = text_width(t, 11);
    if (px - w / 2 < last_right + 6) continue;  // would overlap its left neighbour
    s += "<line x1=\"" + num(px) + "\" x2=\"" + num(px) + "\" y1=\"" + num(top + plot_h) + "\" y2=\"" + num(top + plot_h + 4) + "\"/>";
    s += "<text class=\"tick\" x=\"" + num(px) + "\" y=\"" + num(top + plot_h + 17) + "\" text-anchor=\"middle\">" + escape(t) + "</text>";
    last_right = px + w / 2;
  }
  s += "</g>";
  s += "<text class=\"axis-label\" x=\"" + num(left + plot_w / 2) + "\" y=\"" + num(height - 6) + "\" text-anchor=\"middle\">" + escape(c.x.label) + "</text>";
  s += vertical_label(ylines, top + plot_h / 2);

  for (const auto& m : c.markers) {
    const double px = sx(m.x);
    s += "<g class=\"marker\"><line x1=\"" + num(px) + "\" x2=\"" + num(px) + "\" y1=\"" + num(top) + "\" y2=\"" + num(top + plot_h) + "\"/>";
    s += "<text x=\"" + num(px + 4) + "\" y=\"" + num(top + 12) + "\">" + escape(m.label) + "</text></g>";
  }

  for (size_t si = 0; si < c.series.size(); ++si) {
    const std::string& color = items[si].color;
    std::string path;
    int drawn = 0;
    bool pen_down = false;
    for (size_t i = 0; i < xs[si].size(); ++i) {
      const double y = ys[si][i];
      if (!std::isfinite(y) || !std::isfinite(xs[si][i]) || (c.y.log_scale && y <= 0)) {
        pen_down = false;
        continue;
      }
      path += (pen_down ? "L" : "M") + num(sx(xs[si][i])) + " " + num(sy(c.y.log_scale ? std::log10(y) : y));
      pen_down = true;
      ++drawn;
    }
    if (drawn == 0) continue;
    if (drawn > 1) {  // a single point has no line: its dot below is the mark
      s += "<path class=\"mark\" fill=\"none\" stroke=\"" + escape(color) + "\" stroke-width=\"1.8\" stroke-linejoin=\"round\" d=\"" + path +
           "\"><title>" + escape(c.series[si].name) + "</title></path>";
      ++out.marks;
    }
    if (drawn <= 40) {  // few points: show each, with its value on hover
      for (size_t i = 0; i < xs[si].size(); ++i) {
        const double y = ys[si][i];
        if (!std::isfinite(y) || (c.y.log_scale && y <= 0)) continue;
        if (drawn == 1) ++out.marks;
        s += "<circle class=\"" + std::string(drawn == 1 ? "point mark" : "point") + "\" cx=\"" + num(sx(xs[si][i])) + "\" cy=\"" + num(sy(c.y.log_scale ? std::log10(y) : y)) +
             "\" r=\"3\" fill=\"" + escape(color) + "\"><title>" + escape(c.series[si].name) + ": " +
             escape(c.y.percent ? percent(y) : number(y)) + " at " + escape(c.x.label) + " " + escape(number(xs[si][i], 6)) + "</title></circle>";
      }
    }
  }
  s += legend(items, left, 2, plot_w).first;
  out.svg = s + "</svg>";
  return out;
}

inline chart_detail::Rendered render(const BarChart& c) {
  using namespace chart_detail;
  Rendered out;
  std::vector<LegendItem> items;
  for (size_t i = 0; i < c.series.size(); ++i)
    items.push_back({c.series[i].name, c.series[i].color.empty() ? palette::cycle()[i % palette::cycle().size()] : c.series[i].color, false});
  const size_t ncat = c.categories.size(), nser = c.series.size();

  double v0 = 0, v1 = c.value_axis.percent ? 1.0 : 0.0;  // bars start at zero
  for (const auto& se : c.series)
    for (double v : se.values)
      if (std::isfinite(v)) v0 = std::min(v0, v), v1 = std::max(v1, v);
  if (v1 == v0) v1 = v0 + 1;
  if (std::isfinite(c.value_axis.min)) v0 = c.value_axis.min;
  if (std::isfinite(c.value_axis.max)) v1 = c.value_axis.max;
  const Ticks vt = nice_ticks(v0, v1, 5);
  const auto vlabel = [&](double v) { return tick_label(v, vt.step, c.value_axis.percent); };
  const auto value_text = [&](double v) {
    return (c.value_axis.percent ? percent(v, 1) : number(v, 3)) + c.value_suffix;
  };

  std::string s;
  double height = c.height;
  if (!c.horizontal) {
    double vtw = 0;
    for (double v : vt.values) vtw = std::max(vtw, text_width(vlabel(v), 11));
    // Category labels: horizontal when they fit under their group (judged on an estimated plot width, as the
    // left margin depends on the axis label, which depends on the plot height left by these labels), else slanted.
    double widest = 0;
    for (const auto& cat : c.categories) widest = std::max(widest, text_width(cat, 11));
    const bool slant = widest > (c.width - 90.0) / static_cast<double>(std::max<size_t>(ncat, 1)) - 4;
    std::vector<std::string> labels;
    for (const auto& cat : c.categories) labels.push_back(slant ? shorten(cat, 22) : cat);
    double label_h = 18;
    if (slant) {
      double w = 0;
      for (const auto& l : labels) w = std::max(w, text_width(l, 11));
      label_h = std::min(150.0, w * 0.64 + 14);
    }
    const auto vlines = vertical_label_lines(c.value_axis.label, std::max<double>(c.height, 300) - label_h - 26 - 40);
    const double left = 26 + 15 * static_cast<double>(vlines.size() - 1) + vtw + 8, right = 12;
    const double plot_w = c.width - left - right;
    const double group = plot_w / static_cast<double>(std::max<size_t>(ncat, 1));
    const double top = legend_height(items, plot_w) + 10, bottom = label_h + 26;
    height = std::max<double>(c.height, top + bottom + 140);
    const double plot_h = height - top - bottom;
    const Scale sv{vt.lo, vt.hi, top + plot_h, top};
    s = svg_open(c.width, height, c.title);
    s += "<g class=\"grid\">";
    for (double v : vt.values)
      s += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + plot_w) + "\" y1=\"" + num(sv(v)) + "\" y2=\"" + num(sv(v)) + "\"/>";
    s += "</g><g class=\"axis\">";
    for (double v : vt.values)
      s += "<text class=\"tick\" x=\"" + num(left - 6) + "\" y=\"" + num(sv(v) + 4) + "\" text-anchor=\"end\">" + escape(vlabel(v)) + "</text>";
    s += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + plot_w) + "\" y1=\"" + num(sv(0)) + "\" y2=\"" + num(sv(0)) + "\"/>";
    s += "<line x1=\"" + num(left) + "\" x2=\"" + num(left) + "\" y1=\"" + num(top) + "\" y2=\"" + num(top + plot_h) + "\"/>";
    for (size_t k = 0; k < ncat; ++k) {
      const double cx = left + group * (static_cast<double>(k) + 0.5), ly = top + plot_h + 15;
      if (slant)
        s += "<text class=\"tick\" transform=\"translate(" + num(cx + 3) + "," + num(ly - 4) + ") rotate(-40)\" text-anchor=\"end\"><title>" +
             escape(c.categories[k]) + "</title>" + escape(labels[k]) + "</text>";
      else
        s += "<text class=\"tick\" x=\"" + num(cx) + "\" y=\"" + num(ly) + "\" text-anchor=\"middle\">" + escape(labels[k]) + "</text>";
    }
    s += "</g>";
    s += "<text class=\"axis-label\" x=\"" + num(left + plot_w / 2) + "\" y=\"" + num(height - 6) + "\" text-anchor=\"middle\">" + escape(c.category_axis.label) + "</text>";
    s += vertical_label(vlines, top + plot_h / 2);
    const double inner = group * (nser > 1 ? 0.8 : 0.6), bw = inner / static_cast<double>(std::max<size_t>(nser, 1));
    const auto fits = [&](double v) { return c.value_labels && text_width(value_text(v), 10) <= bw + 1; };
    for (size_t k = 0; k < ncat; ++k) {
      for (size_t si = 0; si < nser; ++si) {
        const double v = k < c.series[si].values.size() ? c.series[si].values[k] : std::nan("");
        const double x = left + group * static_cast<double>(k) + (group - inner) / 2 + bw * static_cast<double>(si);
        if (!std::isfinite(v)) {
          s += "<text class=\"na\" x=\"" + num(x + bw / 2) + "\" y=\"" + num(sv(0) - 4) + "\" text-anchor=\"middle\">n/a</text>";
          continue;
        }
        if (v == 0 && c.skip_zero) continue;
        const double y = std::min(sv(v), sv(0)), h = std::max(std::abs(sv(0) - sv(v)), 0.75);
        s += "<rect class=\"mark\" x=\"" + num(x + 0.5) + "\" y=\"" + num(y) + "\" width=\"" + num(std::max(bw - 1, 1.0)) +
             "\" height=\"" + num(h) + "\" fill=\"" + escape(items[si].color) + "\"><title>" + escape(c.series[si].name) + " \u00b7 " +
             escape(c.categories[k]) + ": " + escape(value_text(v)) + "</title></rect>";
        ++out.marks;
        if (fits(v))
          s += "<text class=\"value\" x=\"" + num(x + bw / 2) + "\" y=\"" + num(y - 3) + "\" text-anchor=\"middle\">" + escape(value_text(v)) + "</text>";
      }
    }
    s += legend(items, left, 2, plot_w).first;
  } else {
    double namew = 0;
    std::vector<std::string> labels;
    for (const auto& cat : c.categories) {
      labels.push_back(shorten(cat, 34));
      namew = std::max(namew, text_width(labels.back(), 11));
    }
    const double left = 26 + namew + 8, right = 70;  // room for the value after the longest bar
    const double plot_w = c.width - left - right;
    const double row = nser > 1 ? 10.0 * static_cast<double>(nser) + 8 : 22;
    const double top = legend_height(items, plot_w) + 8, bottom = 40;
    const double plot_h = row * static_cast<double>(std::max<size_t>(ncat, 1));
    height = top + plot_h + bottom;
    const Scale sv{vt.lo, vt.hi, left, left + plot_w};
    s = svg_open(c.width, height, c.title);
    s += "<g class=\"grid\">";
    for (double v : vt.values)
      s += "<line y1=\"" + num(top) + "\" y2=\"" + num(top + plot_h) + "\" x1=\"" + num(sv(v)) + "\" x2=\"" + num(sv(v)) + "\"/>";
    s += "</g><g class=\"axis\">";
    for (double v : vt.values)
      s += "<text class=\"tick\" x=\"" + num(sv(v)) + "\" y=\"" + num(top + plot_h + 16) + "\" text-anchor=\"middle\">" + escape(vlabel(v)) + "</text>";
    s += "<line x1=\"" + num(sv(0)) + "\" x2=\"" + num(sv(0)) + "\" y1=\"" + num(top) + "\" y2=\"" + num(top + plot_h) + "\"/>";
    s += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + plot_w) + "\" y1=\"" + num(top + plot_h) + "\" y2=\"" + num(top + plot_h) + "\"/>";
    for (size_t k = 0; k < ncat; ++k)
      s += "<text class=\"tick\" x=\"" + num(left - 6) + "\" y=\"" + num(top + row * (static_cast<double>(k) + 0.5) + 4) +
           "\" text-anchor=\"end\"><title>" + escape(c.categories[k]) + "</title>" + escape(labels[k]) + "</text>";
    s += "</g>";
    s += "<text class=\"axis-label\" x=\"" + num(left + plot_w / 2) + "\" y=\"" + num(height - 6) + "\" text-anchor=\"middle\">" + escape(c.value_axis.label) + "</text>";
    s += vertical_label({c.category_axis.label}, top + plot_h / 2);
    const double inner = row - 6, bh = inner / static_cast<double>(std::max<size_t>(nser, 1));
    for (size_t k = 0; k < ncat; ++k) {
      for (size_t si = 0; si < nser; ++si) {
        const double v = k < c.series[si].values.size() ? c.series[si].values[k] : std::nan("");
        const double y = top + row * static_cast<double>(k) + 3 + bh * static_cast<double>(si);
        if (!std::isfinite(v)) {
          s += "<text class=\"na\" x=\"" + num(sv(0) + 4) + "\" y=\"" + num(y + bh - 2) + "\">n/a</text>";
          continue;
        }
        const double x = std::min(sv(v), sv(0)), w = std::max(std::abs(sv(v) - sv(0)), 0.75);
        s += "<rect class=\"mark\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(std::max(bh - 1, 1.0)) +
             "\" fill=\"" + escape(items[si].color) + "\"><title>" + escape(c.series[si].name) + " \u00b7 " + escape(c.categories[k]) +
             ": " + escape(value_text(v)) + "</title></rect>";
        ++out.marks;
        if (c.value_labels && bh >= 9)
          s += "<text class=\"value\" x=\"" + num(x + w + 4) + "\" y=\"" + num(y + bh / 2 + 3.5) + "\">" + escape(value_text(v)) + "</text>";
      }
    }
    s += legend(items, left, 2, plot_w).first;
  }
  out.svg = s + "</svg>";
  return out;
}

// A chart in the report: title, the SVG, a caption. data-marks tells the browser test how many data marks
// (bars, line paths) must be visible.
template <typename Chart>
std::string figure(const Chart& c) {
  const auto r = render(c);
  return "<figure class=\"chart\" id=\"" + escape(c.id) + "\" data-marks=\"" + std::to_string(r.marks) + "\"><figcaption class=\"chart-title\">" +
         escape(c.title) + "</figcaption>" + r.svg + (c.caption.empty() ? "" : "<p class=\"caption\">" + escape(c.caption) + "</p>") + "</figure>";
}

}  // namespace taxon::report
