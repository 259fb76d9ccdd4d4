using System.Collections;
using System.Reflection;
using Microsoft.Extensions.Configuration;

namespace OrleansPush.Hosting;

/// <summary>
/// Every configuration key under <c>OrleansPush:</c> that the silo or the gateway reads, so that either process stops at
/// start on a key that neither knows (a misspelt option would otherwise be ignored in silence), naming the key and the
/// nearest known one. One configuration can be mounted into both processes, so both check against the same catalog.
/// <para>The catalog is <c>settings.catalog</c>, embedded in this assembly: one pattern per line, <c>*</c> standing for any
/// one segment (a dictionary key, such as a namespace) and <c>#</c> for an array index. It is generated from the options
/// classes by <see cref="Describe"/>, never written by hand; a test compares it with the classes and rewrites it when
/// asked to (see the README's Configuration section).</para>
/// </summary>
public sealed class SettingsCatalog
{
    /// <summary>The configuration root every OrleansPush option lives under.</summary>
    public const string Root = "OrleansPush";

    private const string AnyKey = "*";
    private const string AnyIndex = "#";
    private readonly string[][] _patterns;

    public SettingsCatalog(IEnumerable<string> patterns)
    {
        Patterns = [.. patterns.Select(p => p.Trim()).Where(p => p.Length > 0 && !p.StartsWith("//", StringComparison.Ordinal))];
        _patterns = [.. Patterns.Select(p => p.Split(':'))];
    }

    /// <summary>The catalog of this build (the embedded <c>settings.catalog</c>).</summary>
    public static SettingsCatalog Default { get; } = LoadEmbedded();

    public IReadOnlyList<string> Patterns { get; }

    /// <summary>Stops the process (throws) when the configuration holds a key under <c>OrleansPush:</c> that the catalog
    /// does not know; the message names every such key and the nearest known one.</summary>
    /// <exception cref="InvalidOperationException">An unknown key.</exception>
    public static void ThrowIfUnknown(IConfiguration configuration)
    {
        var unknown = Default.Unknown(configuration);
        if (unknown.Count == 0)
        {
            return;
        }

        var lines = unknown.Select(u => u.Nearest is null
            ? $"{u.Key} is not a setting of OrleansPush."
            : $"{u.Key} is not a setting of OrleansPush; did you mean {u.Nearest}?");
        throw new InvalidOperationException("Unknown configuration: " + string.Join(" ", lines)
            + " (A new option is known once Hosting/settings.catalog is regenerated; see the README's Configuration section.)");
    }

    /// <summary>Every key with a value under <c>OrleansPush:</c> that no pattern matches, with the nearest known key.</summary>
    public IReadOnlyList<(string Key, string? Nearest)> Unknown(IConfiguration configuration) =>
        [.. configuration.GetSection(Root).AsEnumerable()
            .Where(kv => kv.Value is not null && !Knows(kv.Key))
            .Select(kv => kv.Key)
            .Order(StringComparer.OrdinalIgnoreCase)
            .Select(key => (key, Nearest(key)))];

    /// <summary>Whether <paramref name="key"/> (colon-separated, case-insensitive, as configuration keys are) is a
    /// setting.</summary>
    public bool Knows(string key)
    {
        var segments = key.Split(':');
        return _patterns.Any(p => p.Length == segments.Length && Enumerable.Range(0, p.Length).All(i => SegmentMatches(p[i], segments[i])));
    }

    /// <summary>The known key closest to <paramref name="key"/> (edit distance, with the pattern's <c>*</c> and
    /// <c>#</c> filled from the key itself), or null when nothing is close.</summary>
    public string? Nearest(string key)
    {
        var segments = key.Split(':');
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var pattern in _patterns)
        {
            var candidate = string.Join(':', pattern.Select((p, i) => p is AnyKey or AnyIndex && i < segments.Length ? segments[i] : p));
            var distance = EditDistance(key.ToUpperInvariant(), candidate.ToUpperInvariant());
            if (distance < bestDistance)
            {
                (best, bestDistance) = (candidate, distance);
            }
        }

        // A suggestion that changes more than a third of the key is a guess, not a spelling fix.
        return bestDistance <= Math.Max(3, key.Length / 3) ? best : null;
    }

    /// <summary>The patterns of the given options classes, each bound at its section, in a stable order: the content
    /// of <c>settings.catalog</c>.</summary>
    public static IReadOnlyList<string> Describe(IEnumerable<(string Section, Type Type)> options)
    {
        var patterns = new SortedSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (section, type) in options)
        {
            Walk(section, type, patterns, depth: 0);
        }

        return [.. patterns];
    }

    private static void Walk(string prefix, Type type, SortedSet<string> patterns, int depth)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (depth > 8)
        {
            throw new InvalidOperationException($"{prefix}: options nest deeper than the catalog follows.");
        }

        if (IsScalar(type))
        {
            patterns.Add(prefix);
        }
        else if (DictionaryValueType(type) is { } value)
        {
            Walk(prefix + ":" + AnyKey, value, patterns, depth + 1);
        }
        else if (ElementType(type) is { } element)
        {
            Walk(prefix + ":" + AnyIndex, element, patterns, depth + 1);
        }
        else
        {
            foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                // What the configuration binder can set: a public setter, or a collection it can fill in place.
                var bindable = property.SetMethod is { IsPublic: true }
                    || (property.GetMethod is { IsPublic: true } && (DictionaryValueType(property.PropertyType) is not null || ElementType(property.PropertyType) is not null) && !property.PropertyType.IsArray);
                if (bindable && property.GetIndexParameters().Length == 0)
                {
                    Walk(prefix + ":" + property.Name, property.PropertyType, patterns, depth + 1);
                }
            }
        }
    }

    private static bool IsScalar(Type type) =>
        type.IsPrimitive || type.IsEnum || type == typeof(string) || type == typeof(decimal) || type == typeof(TimeSpan)
        || type == typeof(DateTime) || type == typeof(DateTimeOffset) || type == typeof(Guid) || type == typeof(Uri)
        || type == typeof(System.Net.IPAddress);

    private static Type? DictionaryValueType(Type type)
    {
        var dictionary = type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IDictionary<,>)
            ? type
            : type.GetInterfaces().FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IDictionary<,>));
        return dictionary?.GetGenericArguments() is [var key, var value] && key == typeof(string) ? value : null;
    }

    private static Type? ElementType(Type type)
    {
        if (type == typeof(string))
        {
            return null;
        }

        if (type.IsArray)
        {
            return type.GetElementType();
        }

        var enumerable = type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IEnumerable<>)
            ? type
            : type.GetInterfaces().FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IEnumerable<>));
        return enumerable is not null && typeof(IEnumerable).IsAssignableFrom(type) ? enumerable.GetGenericArguments()[0] : null;
    }

    private static bool SegmentMatches(string pattern, string segment) => pattern switch
    {
        AnyKey => segment.Length > 0,
        AnyIndex => segment.Length > 0 && segment.All(char.IsAsciiDigit),
        _ => string.Equals(pattern, segment, StringComparison.OrdinalIgnoreCase),
    };

    private static int EditDistance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitution, Math.Min(previous[j] + 1, current[j - 1] + 1));
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }

    private static SettingsCatalog LoadEmbedded()
    {
        var assembly = typeof(SettingsCatalog).Assembly;
        var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith("settings.catalog", StringComparison.Ordinal));
        using var stream = assembly.GetManifestResourceStream(name)!;
        using var reader = new StreamReader(stream);
        return new SettingsCatalog(reader.ReadToEnd().Split('\n'));
    }
}
