// A latency CDF chart as standalone SVG, written directly: log-scale x axis (milliseconds) with
// decade ticks, fraction of invocations on y, one path per curve, a legend and axis titles. Each
// group (system and mode) has its own colour and each function its own dash pattern, so no two
// curves look alike however many systems, modes and functions a run has.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fnexec::bench {

struct LogAxis {
  double min = 0, max = 0;      // the axis range: whole decades around the data
  std::vector<double> decades;  // labelled ticks: 0.1, 1, 10, ...
  std::vector<double> minor;    // 2..9 × each decade inside the range, unlabelled
};

// Decades that enclose [lo, hi] (both > 0; anything smaller is treated as lo = hi / 10).
LogAxis log_axis(double lo, double hi);
// "0.01", "0.1", "1", "10", "1000": a decade tick's label without float noise.
std::string decade_label(double v);

// &, <, >, " and ' as XML entities; control characters other than tab and newline become '?'.
std::string xml_escape(std::string_view s);

struct Curve {
  std::string label;               // "fnexec cold · true"
  std::vector<double> samples_ms;  // any order
  std::string group;               // "fnexec cold": curves of one group share a colour ("": the label)
  std::string function;            // "true": curves of one function share a dash pattern ("": the label)
};

struct CurveStyle {
  std::string color;      // "#d62728"
  std::string dasharray;  // SVG stroke-dasharray; "" is a solid line
};

// One style per curve: colours in order of each group's first appearance (sixteen listed ones,
// then generated hues), dash patterns likewise per function (solid first).
std::vector<CurveStyle> curve_styles(const std::vector<Curve>& curves);

std::string render_cdf_svg(std::string_view title, std::string_view subtitle,
                           const std::vector<Curve>& curves);

}  // namespace fnexec::bench
