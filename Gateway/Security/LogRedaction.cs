using System.Text.RegularExpressions;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// Keeps tokens out of every log line: each logger provider registered so far is wrapped so that a line (and its
/// structured values) holding <c>access_token=...</c>, <c>Bearer ...</c> or any JWT-shaped string is written with the secret replaced by
/// <c>[redacted]</c>. That covers ASP.NET Core's request logs, whose URLs carry the query string (browsers can only send
/// a WebSocket's or EventSource's token there). Lines without either are passed through untouched.
/// <para>Limit: rules that target one provider by its alias (<c>Logging:Console:LogLevel</c>) no longer apply to the
/// wrapped provider; the general <c>Logging:LogLevel</c> rules do.</para>
/// </summary>
public static partial class LogRedaction
{
    public const string Redacted = "[redacted]";

    /// <summary>Wraps every <see cref="ILoggerProvider"/> registered before this call.</summary>
    public static IServiceCollection AddLogRedaction(this IServiceCollection services)
    {
        for (var i = 0; i < services.Count; i++)
        {
            var descriptor = services[i];
            if (descriptor.ServiceType != typeof(ILoggerProvider) || descriptor.IsKeyedService)
            {
                continue;
            }

            services[i] = ServiceDescriptor.Singleton<ILoggerProvider>(sp => new RedactingLoggerProvider(Create(sp, descriptor)));
        }

        return services;
    }

    /// <summary>The text with token values replaced.</summary>
    public static string Redact(string text) =>
        MayHoldSecret(text)
            ? JwtPattern().Replace(BearerPattern().Replace(QueryTokenPattern().Replace(text, "$1" + Redacted), "$1" + Redacted), Redacted)
            : text;

    /// <summary>Cheap pre-check: a query token, a bearer header, or anything shaped like a JWT (its header is base64url
    /// JSON, so it starts with <c>eyJ</c>): SignalR's debug log, for one, prints hub arguments such as a refresh token.</summary>
    internal static bool MayHoldSecret(string? text) =>
        text is not null && (text.Contains("access_token", StringComparison.OrdinalIgnoreCase) || text.Contains("bearer", StringComparison.OrdinalIgnoreCase)
            || text.Contains("eyJ", StringComparison.Ordinal));

    private static ILoggerProvider Create(IServiceProvider services, ServiceDescriptor descriptor) =>
        descriptor.ImplementationInstance as ILoggerProvider
        ?? (ILoggerProvider?)descriptor.ImplementationFactory?.Invoke(services)
        ?? (ILoggerProvider)ActivatorUtilities.CreateInstance(services, descriptor.ImplementationType!);

    [GeneratedRegex(@"(access_token(?:=|%3D))[^&\s""'<>]*", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex QueryTokenPattern();

    [GeneratedRegex(@"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*", RegexOptions.CultureInvariant)]
    private static partial Regex JwtPattern();

    [GeneratedRegex(@"(bearer\s+)[A-Za-z0-9\-_.~+/=]+", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex BearerPattern();

    private sealed class RedactingLoggerProvider(ILoggerProvider inner) : ILoggerProvider, ISupportExternalScope
    {
        public ILogger CreateLogger(string categoryName) => new RedactingLogger(inner.CreateLogger(categoryName));

        public void SetScopeProvider(IExternalScopeProvider scopeProvider)
        {
            if (inner is ISupportExternalScope scoped)
            {
                scoped.SetScopeProvider(scopeProvider);
            }
        }

        public void Dispose() => inner.Dispose();
    }

    private sealed class RedactingLogger(ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!inner.IsEnabled(logLevel))
            {
                return;
            }

            var message = formatter(state, exception);
            var values = state as IReadOnlyList<KeyValuePair<string, object?>>;
            if (!MayHoldSecret(message) && (values is null || !values.Any(v => v.Value is string s && MayHoldSecret(s))))
            {
                inner.Log(logLevel, eventId, state, exception, formatter);
                return;
            }

            var redacted = new RedactedState(Redact(message), values?.Select(v => new KeyValuePair<string, object?>(v.Key, RedactValue(v.Value))).ToArray() ?? []);
            inner.Log(logLevel, eventId, redacted, exception, static (s, _) => s.Message);
        }
    }

    /// <summary>Plain values stay as they are; anything else (strings, and objects whose text may hold a token, such as
    /// SignalR's invocation messages) becomes its redacted text.</summary>
    private static object? RedactValue(object? value) => value switch
    {
        null => null,
        string s => Redact(s),
        _ when value.GetType().IsPrimitive || value is Enum or decimal or DateTime or DateTimeOffset or TimeSpan or Guid => value,
        _ => Redact(value.ToString() ?? string.Empty),
    };

    /// <summary>A log state whose text and values have been redacted.</summary>
    private sealed class RedactedState(string message, KeyValuePair<string, object?>[] values) : IReadOnlyList<KeyValuePair<string, object?>>
    {
        public string Message { get; } = message;

        public int Count => values.Length;

        public KeyValuePair<string, object?> this[int index] => values[index];

        public IEnumerator<KeyValuePair<string, object?>> GetEnumerator() => ((IEnumerable<KeyValuePair<string, object?>>)values).GetEnumerator();

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => values.GetEnumerator();

        public override string ToString() => Message;
    }
}
