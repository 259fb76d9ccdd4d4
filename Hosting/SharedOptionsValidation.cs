using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using OrleansPush.Hosting.Webhooks;

namespace OrleansPush.Hosting;

/// <summary>
/// Binding and start-up validation of the options that silos and gateways share (<see cref="TopicOptions"/>,
/// <see cref="RoutingOptions"/>, <see cref="ClusterSettings"/>, <see cref="PushStreamOptions"/>,
/// <see cref="StorageOptions"/>): a wrong value stops the process with a message that names the key.
/// </summary>
public static class SharedOptions
{
    /// <summary>Binds <typeparamref name="T"/> at <paramref name="section"/>, validated when the host starts.</summary>
    public static OptionsBuilder<T> AddValidatedOptions<T, TValidator>(this IServiceCollection services, IConfiguration configuration, string section)
        where T : class
        where TValidator : class, IValidateOptions<T>
    {
        services.AddSingleton<IValidateOptions<T>, TValidator>();
        return services.AddOptions<T>().Bind(configuration.GetSection(section)).ValidateOnStart();
    }

    /// <summary>Topic and routing options, for silos and gateways alike.</summary>
    public static IServiceCollection AddSharedOptions(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddValidatedOptions<TopicOptions, TopicOptionsValidator>(configuration, TopicOptions.Section);
        services.AddValidatedOptions<RoutingOptions, RoutingOptionsValidator>(configuration, RoutingOptions.Section);
        services.AddWebhooks(configuration);
        return services;
    }

    /// <summary>Reads options that wiring needs before any host exists (clustering, streams, storage), validated now.</summary>
    /// <exception cref="OptionsValidationException">A value is wrong; the message names the key.</exception>
    public static T Read<T>(IConfiguration configuration, string section, IValidateOptions<T> validator)
        where T : class, new()
    {
        var options = configuration.GetSection(section).Get<T>() ?? new T();
        var result = validator.Validate(Options.DefaultName, options);
        return result.Failed ? throw new OptionsValidationException(section, typeof(T), result.Failures) : options;
    }

    public static ClusterSettings ReadCluster(IConfiguration configuration) =>
        Read(configuration, ClusterSettings.Section, new ClusterSettingsValidator());

    public static PushStreamOptions ReadStreams(IConfiguration configuration) =>
        Read(configuration, PushStreamOptions.Section, new PushStreamOptionsValidator());

    public static StorageOptions ReadStorage(IConfiguration configuration) =>
        Read(configuration, StorageOptions.Section, new StorageOptionsValidator());
}

internal static class Failures
{
    public static void Range(List<string> failures, string key, TimeSpan value, TimeSpan min, TimeSpan max)
    {
        if (value < min || value > max)
        {
            failures.Add($"{key} must be between {min} and {max} (is {value}).");
        }
    }

    public static void Range(List<string> failures, string key, long value, long min, long max)
    {
        if (value < min || value > max)
        {
            failures.Add($"{key} must be between {min} and {max} (is {value}).");
        }
    }

    public static ValidateOptionsResult Result(List<string> failures) =>
        failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
}

public sealed class TopicOptionsValidator : IValidateOptions<TopicOptions>
{
    public const int MaxHistorySize = 1_000_000;

    public ValidateOptionsResult Validate(string? name, TopicOptions o)
    {
        var failures = new List<string>();
        Failures.Range(failures, $"{TopicOptions.Section}:DedupeWindow", o.DedupeWindow, TimeSpan.FromSeconds(1), TimeSpan.FromDays(7));
        Namespace(failures, $"{TopicOptions.Section}:Default", o.Default);
        Namespace(failures, $"{TopicOptions.Section}:Personal", o.Personal);
        foreach (var (ns, options) in o.Namespaces)
        {
            var key = $"{TopicOptions.Section}:Namespaces:{ns}";
            if (ns.Length == 0 || ns.Contains(':', StringComparison.Ordinal) || !TopicName.IsValid(ns))
            {
                failures.Add($"{key}: a namespace is the part of a topic before its first ':' (letters, digits, _ - . / @).");
            }
            else if (TopicName.PersonalOwner(ns + ":x") is not null)
            {
                failures.Add($"{key}: personal channels are configured under {TopicOptions.Section}:Personal.");
            }

            Namespace(failures, key, options);
        }

        return Failures.Result(failures);
    }

    private static void Namespace(List<string> failures, string key, NamespaceOptions o)
    {
        Failures.Range(failures, key + ":HistorySize", o.HistorySize, 0, MaxHistorySize);
        Failures.Range(failures, key + ":HistoryTtl", o.HistoryTtl, TimeSpan.FromSeconds(1), TimeSpan.FromDays(365));
        Failures.Range(failures, key + ":PositionTtl", o.PositionTtl, TimeSpan.FromSeconds(1), TimeSpan.FromDays(365));
    }
}

public sealed class RoutingOptionsValidator : IValidateOptions<RoutingOptions>
{
    public ValidateOptionsResult Validate(string? name, RoutingOptions o)
    {
        var failures = new List<string>();

        // Gateways renew at a third of the lease; below a second renewals would crowd out the work they guard.
        Failures.Range(failures, $"{RoutingOptions.Section}:Lease", o.Lease, TimeSpan.FromSeconds(1), TimeSpan.FromHours(1));
        return Failures.Result(failures);
    }
}

public sealed class ClusterSettingsValidator : IValidateOptions<ClusterSettings>
{
    public ValidateOptionsResult Validate(string? name, ClusterSettings o)
    {
        var failures = new List<string>();
        const string section = ClusterSettings.Section;
        Failures.Range(failures, $"{section}:SiloPort", o.SiloPort, 1, 65535);
        Failures.Range(failures, $"{section}:GatewayPort", o.GatewayPort, 1, 65535);
        if (o.PrimarySiloPort is { } primary)
        {
            Failures.Range(failures, $"{section}:PrimarySiloPort", primary, 1, 65535);
        }

        for (var i = 0; i < o.GatewayPorts.Length; i++)
        {
            Failures.Range(failures, $"{section}:GatewayPorts:{i}", o.GatewayPorts[i], 1, 65535);
        }

        if (o.Mode == ClusterMode.Localhost && o.GatewayPorts.Length == 0)
        {
            failures.Add($"{section}:GatewayPorts must name at least one silo gateway port in Localhost mode.");
        }

        Failures.Range(failures, $"{section}:ResponseTimeout", o.ResponseTimeout, TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(10));
        Failures.Range(failures, $"{section}:GrainDirectoryLease", o.GrainDirectoryLease, TimeSpan.Zero, TimeSpan.FromMinutes(10));
        if (string.IsNullOrWhiteSpace(o.ClusterId))
        {
            failures.Add($"{section}:ClusterId must not be empty.");
        }

        if (string.IsNullOrWhiteSpace(o.ServiceId))
        {
            failures.Add($"{section}:ServiceId must not be empty.");
        }

        if (!Enum.IsDefined(o.Mode))
        {
            failures.Add($"{section}:Mode must be Embedded, Localhost or Cluster.");
        }

        if (!Enum.IsDefined(o.Clustering))
        {
            failures.Add($"{section}:Clustering must be Localhost, Redis or Postgres.");
        }

        return Failures.Result(failures);
    }
}

public sealed class PushStreamOptionsValidator : IValidateOptions<PushStreamOptions>
{
    public ValidateOptionsResult Validate(string? name, PushStreamOptions o)
    {
        var failures = new List<string>();
        Failures.Range(failures, $"{PushStreamOptions.Section}:QueueCount", o.QueueCount, 1, 1024);
        Failures.Range(failures, $"{PushStreamOptions.Section}:DeliveryBatchSize", o.DeliveryBatchSize, 1, 4096);
        return Failures.Result(failures);
    }
}

public sealed class StorageOptionsValidator : IValidateOptions<StorageOptions>
{
    public ValidateOptionsResult Validate(string? name, StorageOptions o)
    {
        var failures = new List<string>();
        const string section = StorageOptions.Section;
        if (!Enum.IsDefined(o.Provider))
        {
            failures.Add($"{section}:Provider must be Memory, Redis or Postgres.");
        }

        if (o.Provider == StorageProvider.Redis && string.IsNullOrWhiteSpace(o.Redis))
        {
            failures.Add($"{section}:Redis must be set when {section}:Provider is Redis.");
        }

        if (o.Provider == StorageProvider.Postgres && string.IsNullOrWhiteSpace(o.Postgres))
        {
            failures.Add($"{section}:Postgres must be set when {section}:Provider is Postgres.");
        }

        // The prefix names Redis keys and PostgreSQL tables: letters, digits and _ keep it valid in both.
        if (o.Prefix.Length is 0 or > 40 || !o.Prefix.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
        {
            failures.Add($"{section}:Prefix must be 1-40 letters, digits or _ (is '{o.Prefix}').");
        }

        return Failures.Result(failures);
    }
}
