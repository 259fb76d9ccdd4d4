using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace OrleansPush.Gateway.Observability;

/// <summary>
/// Serves the <see cref="GatewayMetrics.MeterName"/> instruments at <c>/metrics</c> in the Prometheus text format
/// (0.0.4), from a <see cref="MeterListener"/> started with the app (the OpenTelemetry Prometheus exporter for
/// ASP.NET Core is a prerelease only). Counters are cumulative from the listener's start; up-down counters are served
/// as gauges; the histogram has fixed millisecond buckets. Series are keyed by at most one tag, so recording a
/// measurement allocates nothing once its series exists.
/// </summary>
public sealed class PrometheusScrape : IDisposable
{
    /// <summary>Upper bounds (ms) of the latency histogram's buckets; <c>+Inf</c> follows.</summary>
    public static readonly double[] LatencyBuckets = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<(Instrument Instrument, string? Key, object? Value), Series> _series = new();

    public PrometheusScrape()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == GatewayMetrics.MeterName)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Record(instrument, value, tags));
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Record(instrument, value, tags));
        _listener.Start();
    }

    /// <summary>The current values, in the Prometheus text format.</summary>
    public string Render()
    {
        var text = new StringBuilder();
        foreach (var group in _series.GroupBy(s => s.Key.Instrument).OrderBy(g => g.Key.Name, StringComparer.Ordinal))
        {
            var instrument = group.Key;
            var name = NameOf(instrument);
            var type = instrument switch
            {
                Histogram<double> => "histogram",
                UpDownCounter<long> => "gauge",
                _ => "counter",
            };
            var metric = type == "counter" ? name + "_total" : name;
            text.Append("# HELP ").Append(metric).Append(' ').Append(instrument.Description).Append('\n');
            text.Append("# TYPE ").Append(metric).Append(' ').Append(type).Append('\n');
            foreach (var (key, series) in group.OrderBy(s => s.Key.Value as string, StringComparer.Ordinal))
            {
                var label = key.Key is null ? string.Empty : $"{key.Key}=\"{Escape(key.Value as string ?? string.Empty)}\"";
                series.Write(text, metric, label);
            }
        }

        return text.ToString();
    }

    public void Dispose() => _listener.Dispose();

    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var key = tags.Length == 0 ? (instrument, null, null) : (instrument, tags[0].Key, tags[0].Value);
        if (!_series.TryGetValue(key, out var series))
        {
            series = _series.GetOrAdd(key, _ => new Series(instrument is Histogram<double>));
        }

        series.Add(value);
    }

    private static string NameOf(Instrument instrument)
    {
        var name = instrument.Name.Replace('.', '_');
        return instrument.Unit == "ms" ? name + "_milliseconds" : name;
    }

    private static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal)
        .Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>One time series: a sum, and for a histogram its bucket counts.</summary>
    private sealed class Series(bool histogram)
    {
        private readonly long[]? _buckets = histogram ? new long[LatencyBuckets.Length + 1] : null;
        private readonly Lock _lock = new();
        private double _sum;
        private long _count;

        public void Add(double value)
        {
            lock (_lock)
            {
                _sum += value;
                _count++;
                if (_buckets is not null)
                {
                    var i = 0;
                    while (i < LatencyBuckets.Length && value > LatencyBuckets[i])
                    {
                        i++;
                    }

                    _buckets[i]++;
                }
            }
        }

        public void Write(StringBuilder text, string metric, string label)
        {
            double sum;
            long count;
            long[]? buckets;
            lock (_lock)
            {
                (sum, count, buckets) = (_sum, _count, _buckets?.ToArray());
            }

            if (buckets is null)
            {
                text.Append(metric).Append(label.Length == 0 ? string.Empty : "{" + label + "}").Append(' ').Append(Number(sum)).Append('\n');
                return;
            }

            var prefix = label.Length == 0 ? string.Empty : label + ",";
            long cumulative = 0;
            for (var i = 0; i < buckets.Length; i++)
            {
                cumulative += buckets[i];
                var le = i < LatencyBuckets.Length ? Number(LatencyBuckets[i]) : "+Inf";
                text.Append(metric).Append("_bucket{").Append(prefix).Append("le=\"").Append(le).Append("\"} ").Append(cumulative).Append('\n');
            }

            var suffix = label.Length == 0 ? string.Empty : "{" + label + "}";
            text.Append(metric).Append("_sum").Append(suffix).Append(' ').Append(Number(sum)).Append('\n');
            text.Append(metric).Append("_count").Append(suffix).Append(' ').Append(count).Append('\n');
        }
    }
}
